"""``claimflow generate`` and the parts of ``claimflow produce`` that need no broker."""

from __future__ import annotations

import hashlib
import signal
from pathlib import Path

import pytest
from click.testing import CliRunner

from claimflow.cli import cli
from producer.cli import Interrupts, exit_code, summary
from producer.kafka import SendReport
from producer.settings import ProducerSettings

HEADER = "claim_id,claim_amount,num_services,patient_age,provider_id,days_since_last_claim"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(("profile", "suffix"), [("seed", "csv"), ("realistic", "jsonl"),
                                                 ("realistic-v1", "csv")])
def test_generate_is_deterministic(tmp_path: Path, profile: str, suffix: str) -> None:
    paths = {name: tmp_path / f"{name}.{suffix}" for name in ("a", "b", "other")}
    for name, seed in (("a", "5"), ("b", "5"), ("other", "6")):
        code, out, _ = run("generate", "--profile", profile, "--seed", seed, "--rows", "3000",
                           "--out", str(paths[name]), "--quiet")
        assert code == 0, out
    assert sha256(paths["a"]) == sha256(paths["b"])
    assert sha256(paths["a"]) != sha256(paths["other"])


def test_generate_reports_what_it_wrote(tmp_path: Path) -> None:
    out_file = tmp_path / "sub" / "lab.csv"
    code, out, _ = run("generate", "--profile", "seed", "--out", str(out_file))
    assert code == 0
    assert "wrote 1,050 seed claims (50 labelled anomalies: gross_outlier 50)" in out
    assert len(out_file.read_text().splitlines()) == 1051


def test_generate_anomaly_rate(tmp_path: Path) -> None:
    out_file = tmp_path / "r.jsonl"
    code, out, _ = run("generate", "--rows", "20000", "--anomaly-rate", "0.1", "--out",
                       str(out_file))
    assert code == 0
    assert "2,000 labelled anomalies: duplicate" in out


@pytest.mark.parametrize(("profile", "name", "message"), [
    ("realistic", "x.csv", "--profile realistic writes contract v2 claims"),
    ("seed", "x.jsonl", "--profile seed writes contract v1 claims as CSV"),
    ("realistic-v1", "x.jsonl", "--profile realistic-v1 writes contract v1 claims as CSV"),
    ("synthea", "x.csv", "--profile synthea writes contract v2 claims"),
])
def test_generate_refuses_a_file_type_the_contract_does_not_use(
    tmp_path: Path, profile: str, name: str, message: str
) -> None:
    code, _, err = run("generate", "--profile", profile, "--out", str(tmp_path / name))
    assert code == 2
    assert message in " ".join(err.split())
    assert not (tmp_path / name).exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--rows", "0"], "--rows"),
    (["--anomaly-rate", "1.5"], "--anomaly-rate"),
    (["--seed", "-3"], "--seed"),
    (["--profile", "lab"], "--profile"),
    ([], "Missing option '--out'"),
    (["--patients", "20"], "--patients only apply to --profile synthea"),
    (["--profile", "realistic-v1", "--state", "Ohio", "--years", "2", "--out", "x.csv"],
     "--state, --years only apply to --profile synthea"),
    (["--profile", "synthea", "--rows", "500"], "--rows does not apply to --profile synthea"),
    (["--profile", "synthea", "--patients", "0"], "--patients"),
    (["--profile", "synthea", "--since", "2023-13-01"], "--since"),
])
def test_generate_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    if "--out" not in args and message != "Missing option '--out'":
        args = [*args, "--out", str(tmp_path / "x.jsonl")]
    code, _, err = run("generate", *args)
    assert code == 2
    assert message in err


def test_generate_into_a_folder_fails_cleanly(tmp_path: Path) -> None:
    code, _, err = run("generate", "--out", str(tmp_path))
    assert code == 2
    assert "is a directory" in err


def test_generate_into_an_unwritable_place_fails_cleanly(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, _, err = run("generate", "--rows", "100", "--out", str(blocker / "x.jsonl"))
    assert code == 1
    assert f"cannot write {blocker / 'x.jsonl'}" in err


def test_produce_from_csv_excludes_generation_options(tmp_path: Path) -> None:
    code, _, err = run("produce", "--from-csv", str(tmp_path / "x.csv"), "--seed", "3",
                       "--rows", "5")
    assert code == 2
    assert "--from-csv cannot be combined with --rows, --seed" in err


@pytest.mark.parametrize(("args", "message"), [
    (["--from-file", "x.jsonl", "--rows", "5"], "--from-file cannot be combined with --rows"),
    (["--from-file", "x.jsonl", "--from-csv", "y.csv"], "cannot be combined"),
    (["--from-csv", "x.jsonl"], "use --from-file for JSON Lines"),
    (["--from-file", "x.parquet"], "expected a .jsonl (v2) or .csv (v1) file"),
    (["--from-file", "x.jsonl", "--patients", "5"],
     "--from-file cannot be combined with --patients"),
    (["--profile", "realistic", "--patients", "5"], "--patients only apply to --profile synthea"),
])
def test_produce_file_usage_errors(args: list[str], message: str) -> None:
    code, _, err = run("produce", *args)
    assert code == 2
    assert message in " ".join(err.split())


def test_produce_bad_jsonl_lines_fail_before_any_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    path = tmp_path / "bad.jsonl"
    path.write_text('{"schema_version": 2, "claim_id": "C-1"}\n\nnot json\n')
    code, _, err = run("produce", "--from-file", str(path), "--quiet")
    assert code == 1
    assert f"bad row: {path}:1 (claim_id 'C-1'): invalid Claim: member_id: Field required" in err
    assert f"bad row: {path}:3: invalid Claim: <message>: Invalid JSON" in err
    assert "2 bad row(s); nothing produced (--on-error fail)" in err


def test_produce_missing_csv(tmp_path: Path) -> None:
    code, _, err = run("produce", "--from-csv", str(tmp_path / "x.csv"))
    assert code == 1
    assert "no such file" in err


def test_produce_bad_rows_fail_before_any_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # nothing listens there
    path = tmp_path / "bad.csv"
    path.write_text(f"{HEADER}\n1,10.5,1,30,2,3\n2,abc,1,30,2,3\n3,10,1,130,2,3\n")
    code, _, err = run("produce", "--from-csv", str(path), "--quiet")
    assert code == 1
    assert "bad row: line 3 (claim_id '2'): claim_amount: 'abc' is not a finite number" in err
    assert "bad row: line 4 (claim_id '3'): invalid Claim: patient_age:" in err
    assert "2 bad row(s); nothing produced (--on-error fail)" in err


def test_produce_reports_an_unreachable_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("PRODUCER_METADATA_TIMEOUT_S", "1")
    code, _, err = run("produce", "--rows", "10", "--quiet")
    assert code == 1
    assert "cannot reach Kafka at 127.0.0.1:1 within 1 s" in err


def test_produce_rejects_a_bad_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRODUCER_COMPRESSION", "rar")
    code, _, err = run("produce", "--rows", "10")
    assert code == 1
    assert "invalid PRODUCER_ setting" in err


def test_settings_read_the_prefixed_and_shared_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PRODUCER_TOPIC", "claims.test")
    monkeypatch.setenv("PRODUCER_LINGER_MS", "7")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "broker:29092")
    settings = ProducerSettings()
    assert (settings.topic, settings.linger_ms) == ("claims.test", 7)
    assert settings.kafka_bootstrap_servers == "broker:29092"
    with pytest.raises(ValueError, match="frozen"):
        settings.topic = "other"  # type: ignore[misc]


def test_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PRODUCER_TOPIC", "PRODUCER_COMPRESSION"):
        monkeypatch.delenv(name, raising=False)
    settings = ProducerSettings()
    assert settings.topic == "claims"
    assert settings.compression == "lz4"


def report(**changes: object) -> SendReport:
    fields: dict[str, object] = {"topic": "claims", "total": 10, "enqueued": 10, "failed": 0,
                                     "unconfirmed": 0, "elapsed_s": 2.0, "interrupted": False,
                                     "fatal_error": None}
    fields.update(changes)
    return SendReport(**fields)  # type: ignore[arg-type]


def interrupted_by(signum: int | None) -> Interrupts:
    interrupts = Interrupts()
    if signum is not None:
        interrupts.handle(signum, None)
    return interrupts


@pytest.mark.parametrize(("changes", "signum", "expected"), [
    ({}, None, 0),
    ({"failed": 1}, None, 1),
    ({"unconfirmed": 2}, None, 1),
    ({"fatal_error": "boom"}, None, 1),
    ({"enqueued": 4, "interrupted": True}, signal.SIGINT, 130),
    ({"enqueued": 4, "interrupted": True}, signal.SIGTERM, 143),
    ({"enqueued": 4, "interrupted": True, "failed": 1}, signal.SIGINT, 1),
])
def test_exit_codes(changes: dict[str, object], signum: int | None, expected: int) -> None:
    assert exit_code(report(**changes), interrupted_by(signum)) == expected


def test_summary_line() -> None:
    line = summary(report(enqueued=6, failed=1, interrupted=True), skipped=3)
    assert line == ("sent=5 failed=1 unconfirmed=0 skipped=3 elapsed=2.00s rate=2 claims/s "
                    "topic=claims interrupted (not sent: 4)")


def test_second_interrupt_aborts_the_flush() -> None:
    interrupts = Interrupts()
    interrupts.handle(signal.SIGINT, None)
    assert interrupts.stop.is_set()
    assert not interrupts.abort.is_set()
    interrupts.handle(signal.SIGTERM, None)
    assert interrupts.abort.is_set()
    assert interrupts.signal == signal.SIGINT
