"""A/B: quixstreams or our worker for the member stage (issue 16, part 2).

    make bench-ab                       # creates the quixstreams virtualenv, then runs this
    .venv/bin/python -m bench.ab_quixstreams [--smoke] [--quix-python PATH] [--out FILE]

The same job on the same data for each side (``bench.ab_member_sides`` describes the job and
the sides): v2 realistic claims (``claimflow generate --profile realistic``) produced to a
fresh 6-partition topic keyed by member_id, consumed from the beginning by a fresh group,
one process per side, one after the other, on this run's own broker (``Stack``: free ports,
stopped at the end). Sides: ``quix`` at its default commit interval (5 s), ``quix`` at
50 ms (what a <= 100 ms p99 would need, since exactly-once output is visible only after a
commit), ``ours`` (our ``ScoringLoop``, trivial local scorer) and ``ours-nostate`` (the same
loop without the member stage).

Per side: ``claims_per_s`` from the first claim processed to the group's committed offsets
covering the whole backlog; then one more claim of a known member is produced and the side
is started again in the same group with an empty local state (quix: a new state directory;
ours: always, the state lives in Kafka only): ``restore_to_first_new_s`` is process start
to that claim processed, i.e. imports, group join, restoring every member of the backlog
from the changelog, and the claim.

quixstreams is not a project dependency (it pins confluent-kafka < 2.13, the project runs
2.16): it runs from the virtualenv given by ``--quix-python`` (``make bench-ab`` creates
``.claimflow/quix-venv`` with ``quixstreams==3.28.1``), with the repository on PYTHONPATH
for ``features`` and ``schemas``. Results: ``bench/results/tmp/ab-quixstreams.json``
(git-ignored; the numbers that matter are written up in docs/member-stage.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from bench.common import RESULTS_DIR, machine_info
from bench.member_common import generate_v2, produce_keyed, unlabelled_lines
from bench.run import warm_up_groups
from bench.stack_harness import REPO_ROOT, Stack, stop_on_sigterm
from schemas import ClaimV2

logger = logging.getLogger(__name__)

PARTITIONS = 6
DEFAULT_QUIX_PYTHON = REPO_ROOT / ".claimflow" / "quix-venv" / "bin" / "python"  # make bench-ab


@dataclass(frozen=True)
class Side:
    name: str
    side: str  # the ab_member_sides side
    commit_interval: float = 5.0


SIDES = (Side("quix_default_commit", "quix", 5.0), Side("quix_commit_50ms", "quix", 0.05),
         Side("ours", "ours"), Side("ours_nostate", "ours-nostate"))


def side_command(python: str, side: Side, bootstrap: str, topic: str, output: str, group: str,
                 claims: int, state_dir: Path, expect_more: int = 0) -> list[str]:
    """The side's command line (pure: unit-tested)."""
    command = [python, "-m", "bench.ab_member_sides", side.side, "--bootstrap", bootstrap,
               "--input", topic, "--output", output, "--group", group,
               "--claims", str(claims), "--commit-interval", str(side.commit_interval),
               "--state-dir", str(state_dir)]
    if expect_more:
        command += ["--expect-more", str(expect_more)]
    return command


def run_side(command: list[str], log: Path, timeout_s: float = 1200) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"}
    load = os.getloadavg()
    with log.open("ab") as err:
        done = subprocess.run(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=err, timeout=timeout_s, check=False)
    if done.returncode != 0 or not done.stdout.strip():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"{' '.join(command[:4])} failed ({done.returncode}):\n{tail}")
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    result["load_average_start"] = list(load)
    return result


def create_topics(admin: AdminClient, names: Sequence[str]) -> None:
    futures = admin.create_topics([NewTopic(name, num_partitions=PARTITIONS,
                                            replication_factor=1) for name in names])
    for future in futures.values():
        future.result(30)


def measure(stack: Stack, python_of: dict[str, str], lines: list[bytes], keys: list[bytes],
            extra: tuple[bytes, bytes], tmp: Path) -> dict[str, Any]:
    admin = stack.admin()
    results: dict[str, Any] = {}
    for side in SIDES:
        label = f"ab-{side.name.replace('_', '-')}-{uuid.uuid4().hex[:6]}"
        topic, output, group = f"{label}.claims", f"{label}.out", f"{label}-group"
        create_topics(admin, [topic, output])
        produce_keyed(stack.bootstrap, topic, lines, keys)
        python = python_of[side.side]
        log = stack.logs / f"{side.name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        logger.info("side %s: %d claims", side.name, len(lines))
        run = run_side(side_command(python, side, stack.bootstrap, topic, output, group,
                                    len(lines), tmp / f"{label}-state"), log)
        produce_keyed(stack.bootstrap, topic, [extra[1]], [extra[0]])
        restore = run_side(side_command(python, side, stack.bootstrap, topic, output, group,
                                        len(lines) + 1, tmp / f"{label}-state-new",
                                        expect_more=1), log)
        results[side.name] = {**run, "restore": restore,
                              "commit_interval_s": side.commit_interval
                              if side.side == "quix" else None}
        logger.info("side %s: %s", side.name, results[side.name])
        existing = [t for t in admin.list_topics(timeout=10).topics if label in t]
        for future in admin.delete_topics(existing).values():
            future.result(30)
    return results


def measure_all(smoke: bool, quix_python: Path) -> dict[str, Any]:
    rows = 3_000 if smoke else 300_000
    load_at_start = os.getloadavg()
    if not quix_python.exists():
        raise SystemExit(f"{quix_python} not found: run `make bench-ab` (it creates the "
                         "quixstreams virtualenv) or pass --quix-python")
    version = subprocess.run([str(quix_python), "-c",
                              "import quixstreams; print(quixstreams.__version__)"],
                             capture_output=True, text=True, check=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="claimflow-ab-") as tmp_name, \
            stop_on_sigterm(), Stack(deadline_s=3600) as stack:
        tmp = Path(tmp_name)
        lines = unlabelled_lines(generate_v2(tmp / "claims.jsonl", rows + 1, seed=41))
        claims = [ClaimV2.from_json(line) for line in lines]
        keys = [claim.member_id.encode() for claim in claims]
        # The restore claim: the last one of the file, of a member seen before if possible.
        extra = (keys[-1], lines[-1])
        lines, keys = lines[:-1], keys[:-1]
        stack.start_broker()
        warm_up_groups(stack.bootstrap)  # the group coordinator ready before any side runs
        python_of = {"quix": str(quix_python), "ours": sys.executable,
                     "ours-nostate": sys.executable}
        sides = measure(stack, python_of, lines, keys, extra, tmp)
    return {
        "benchmark": "ab_quixstreams", "smoke": smoke,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "claims": rows, "members": len(set(keys)), "quixstreams": version,
        "sides": sides,
        "load_average": {"start": list(load_at_start), "end": list(os.getloadavg())},
        "machine": machine_info(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab_quixstreams",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="3,000 claims (a minute)")
    parser.add_argument("--quix-python", type=Path, default=DEFAULT_QUIX_PYTHON,
                        help="python of a virtualenv with quixstreams installed")
    parser.add_argument("--out", type=Path, default=None,
                        help="result file (default bench/results/tmp/ab-quixstreams[-smoke].json)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    started = time.monotonic()
    report = measure_all(args.smoke, args.quix_python)
    report["seconds"] = round(time.monotonic() - started, 1)
    out = args.out or RESULTS_DIR / "tmp" / (
        "ab-quixstreams-smoke.json" if args.smoke else "ab-quixstreams.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    for name, side in report["sides"].items():
        print(f"{name:22s} {side.get('claims_per_s') or 0:>9,.0f} claims/s committed "
              f"(processing {side.get('processing_only_per_s') or 0:,.0f}/s, "
              f"{side.get('cpu_us_per_claim') or 0:.0f} us CPU/claim on "
              f"{side.get('cores') or 0:.2f} cores); restore of "
              f"{report['members']:,} members to first new claim "
              f"{side['restore'].get('restore_to_first_new_s') or float('nan'):.1f} s",
              flush=True)
    print(f"results in {out}")
    shutil.rmtree(RESULTS_DIR / "tmp" / "ab-state", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
