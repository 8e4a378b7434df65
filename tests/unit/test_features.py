"""Point-in-time features of v2 claims: member history and code references."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from features.codes import CodeReference, build_code_reference
from features.member import (
    MAX_REMEMBERED,
    MemberHistory,
    fingerprint,
    member_features,
    remember,
)
from features.reasons import in_words
from features.vector import HISTORY_FEATURES, PEER_FEATURES, Evidence, is_resubmission, replay
from schemas import ClaimV2

DAY0 = date(2025, 3, 3)


def claim(n: int, *, member: str = "M-1", provider: str = "P-1", day: int = 0,
          lines: list[tuple[str, int, float]] | None = None, age: int = 40,
          sex: str = "F", submitted_days_later: float = 1.0,
          diagnoses: list[str] | None = None, specialty: str | None = None) -> ClaimV2:
    lines = lines or [("99213", 1, 100.0)]
    served = DAY0 + timedelta(days=day)
    submitted = datetime(served.year, served.month, served.day, tzinfo=UTC) + timedelta(
        days=submitted_days_later, minutes=n)
    payload: dict[str, Any] = {
        "schema_version": 2, "claim_id": f"C-{n}", "member_id": member, "provider_id": provider,
        "patient_age": age, "patient_sex": sex, "service_date": served.isoformat(),
        "submitted_at": submitted.isoformat(),
        **({"diagnosis_codes": diagnoses} if diagnoses else {}),
        **({"provider_specialty": specialty} if specialty else {}),
        "lines": [{"procedure_code": c, "units": u, "charge": ch} for c, u, ch in lines],
        "claim_amount": round(sum(ch for _, _, ch in lines), 2),
        "num_services": sum(u for _, u, _ in lines),
    }
    return ClaimV2.model_validate(payload, strict=False)


def history_of(*claims: ClaimV2) -> MemberHistory:
    history = MemberHistory()
    for c in claims:
        history = remember(history, c)
    return history


def test_a_first_claim_has_no_history() -> None:
    features = member_features(claim(1), MemberHistory())
    assert (features.claims_1d, features.claims_7d, features.claims_30d) == (1.0, 1.0, 1.0)
    assert features.days_since_previous == -1.0
    assert features.duplicate == 0.0
    assert features.duplicate_of is None


def test_windows_count_earlier_claims_by_service_date() -> None:
    history = history_of(claim(1, day=0), claim(2, day=3, provider="P-2"),
                         claim(3, day=9, provider="P-3"), claim(4, day=-40))
    features = member_features(claim(5, day=10, provider="P-4"), history)
    assert features.claims_1d == 1.0  # only itself
    assert features.claims_7d == 2.0  # day 9
    assert features.claims_30d == 4.0  # days 0, 3, 9 (day -40 is outside)
    assert features.providers_30d == 4.0
    assert features.providers_7d == 2.0  # P-3 on day 9 and its own P-4
    assert features.days_since_previous == 1.0


def test_several_providers_within_days_are_a_reason_in_words() -> None:
    evidence = Evidence(None, None, None, None, 0.0)
    words = in_words("providers_7d", 5.0, "high", 2.0, "99th", evidence)
    assert words == "member saw 5 different providers within 7 days (99th percentile: 2)"


def test_an_exact_resubmission_is_a_duplicate_whatever_the_line_order() -> None:
    lines = [("99213", 1, 100.0), ("85025", 2, 24.5)]
    first = claim(1, lines=lines)
    again = claim(2, lines=list(reversed(lines)), submitted_days_later=13)
    features = member_features(again, history_of(first))
    assert features.duplicate == 1.0
    assert features.duplicate_of == "C-1"
    assert features.duplicate_days_earlier == pytest.approx(12.0, abs=0.01)
    assert features.same_provider_same_day == 1.0


@pytest.mark.parametrize("change", [
    {"provider": "P-2"}, {"day": 1}, {"lines": [("99213", 1, 100.01)]},
    {"lines": [("99213", 2, 100.0)]}, {"lines": [("99214", 1, 100.0)]},
])
def test_anything_else_changed_is_no_duplicate(change: dict[str, Any]) -> None:
    features = member_features(claim(2, **change), history_of(claim(1)))
    assert features.duplicate == 0.0


def by_definition(new: ClaimV2, history: MemberHistory) -> tuple[object, ...]:
    """The member features as the issue defines them, one window at a time (what the
    one-pass ``member_features`` must equal)."""
    day = new.service_date.toordinal()
    ages = [day - past.service_day for past in history.recent]

    def within(days: int) -> float:
        return float(sum(1 for age in ages if abs(age) < days)) + 1.0

    def providers(days: int) -> float:
        return float(len({past.provider_id for past, age in zip(history.recent, ages, strict=True)
                          if abs(age) < days} | {new.provider_id}))

    previous = max((past.service_day for past in history.recent if past.service_day <= day),
                   default=None)
    same_day = sum(1 for past in history.recent
                   if past.service_day == day and past.provider_id == new.provider_id)
    digest = fingerprint(new)
    match = next((f for f in reversed(history.fingerprints) if f.digest == digest), None)
    return (within(1), within(7), within(30), providers(30), providers(7),
            -1.0 if previous is None else float(day - previous), float(same_day),
            0.0 if match is None else 1.0, None if match is None else match.claim_id,
            0.0 if match is None else max(
                0.0, (new.submitted_at.timestamp() - match.submitted_s) / 86_400.0))


def test_member_features_equal_their_definition_over_random_histories() -> None:
    import random

    rng = random.Random(3)
    providers, lines = ["P-1", "P-2", "P-3"], [[("99213", 1, 100.0)], [("85025", 2, 24.5)]]
    checked = duplicates = spread = 0
    for _ in range(300):
        history = MemberHistory()
        for n in range(rng.randrange(0, 25)):
            earlier = claim(n, provider=rng.choice(providers), day=rng.randrange(-60, 60),
                            lines=rng.choice(lines), submitted_days_later=rng.random() * 3)
            history = remember(history, earlier)
        new = claim(99, provider=rng.choice(providers), day=rng.randrange(-40, 40),
                    lines=rng.choice(lines), submitted_days_later=rng.random() * 30)
        assert tuple(member_features(new, history)) == by_definition(new, history)
        features = member_features(new, history)
        checked += features.claims_7d > 1.0
        spread += features.providers_7d is not None and features.providers_7d > 1.0
        duplicates += features.duplicate == 1.0
    assert checked > 50  # many cases had claims inside the windows
    assert spread > 20  # and several providers within 7 days
    assert duplicates > 5  # and some an exact earlier match


def test_history_stays_bounded() -> None:
    history = history_of(*(claim(i, day=i % 20) for i in range(MAX_REMEMBERED + 50)))
    assert len(history.recent) == MAX_REMEMBERED


def test_fingerprints_are_stable_across_processes() -> None:
    """State outlives a process: the digest must not be Python's per-process hash."""
    code = ("import sys; from schemas import ClaimV2; from features.member import fingerprint; "
            "print(fingerprint(ClaimV2.from_json(sys.stdin.buffer.read())))")
    other = subprocess.run([sys.executable, "-c", code], input=claim(1).to_json().decode(),
                           capture_output=True, text=True, check=True).stdout.strip()
    assert other == fingerprint(claim(1))


def population(n: int = 400) -> list[ClaimV2]:
    """Office visits at ~100 for adults of both sexes; well-child visits only for children."""
    claims = []
    for i in range(n):
        if i % 4 == 0:
            claims.append(claim(i, member=f"K-{i}", age=5 + i % 8, sex="MF"[i % 2],
                                lines=[("Z00.129", 1, 80.0 + i % 7)]))
        else:
            claims.append(claim(i, member=f"A-{i}", age=30 + i % 40, sex="MF"[i % 2],
                                lines=[("99213", 1, 95.0 + i % 11)]))
    return claims


def test_a_charge_far_above_its_codes_norm_has_a_high_z_and_ratio() -> None:
    codes = build_code_reference(population())
    z = codes.charge_z("99213", 420.0, 1)
    assert z is not None
    assert z > 10
    assert codes.charge_ratio("99213", 420.0, 1) == pytest.approx(4.2, rel=0.05)
    usual = codes.charge_z("99213", 100.0, 1)
    assert usual is not None
    assert abs(usual) < 2
    assert codes.charge_z("UNSEEN", 100.0, 1) is None  # no evidence, not noise


def test_a_code_atypical_for_age_and_sex_is_rare() -> None:
    codes = build_code_reference(population())
    adult = codes.rarity("Z00.129", 50, "M")
    child = codes.rarity("Z00.129", 7, "M")
    assert adult is not None
    assert child is not None
    assert adult > 3 > child


def test_a_code_no_diagnosis_of_the_claim_supports_is_rare() -> None:
    # Diabetes visits bill an HbA1c test, sprains an X-ray; every diagnosis has 30 claims.
    training = [claim(i, lines=[("83036", 1, 40.0)], diagnoses=["E11.9"]) for i in range(30)]
    training += [claim(100 + i, lines=[("73610", 1, 90.0)], diagnoses=["S93.401A"])
                 for i in range(30)]
    codes = build_code_reference(training)
    assert codes.dx_rarity("83036", ["E11.9"]) == 0.0
    unsupported = codes.dx_rarity("73610", ["E11.9"])
    assert unsupported is not None
    assert unsupported > 4  # an ankle X-ray for diabetes alone
    # Any supporting diagnosis is enough; unknown diagnoses or codes give no evidence.
    assert codes.dx_rarity("73610", ["E11.9", "S93.401A"]) == 0.0
    assert codes.dx_rarity("73610", ["Z99.9"]) is None
    assert codes.dx_rarity("99999", ["E11.9"]) is None


def test_replay_gives_each_claim_the_history_before_it() -> None:
    codes = build_code_reference(population())
    first = claim(1, lines=[("99213", 1, 100.0)])
    resubmitted = claim(2, lines=[("99213", 1, 100.0)], submitted_days_later=5)
    rows = list(replay([first, resubmitted], codes))
    assert len(rows[0][1]) == len(HISTORY_FEATURES)
    assert [evidence.duplicate_of for _, _, evidence in rows] == [None, "C-1"]
    assert [is_resubmission(evidence) for _, _, evidence in rows] == [False, True]
    assert list(replay([first, resubmitted], codes)) == rows  # deterministic


# -- charges against the provider's specialty peers (v2-peers) ------------------------------


def peer_population() -> list[ClaimV2]:
    """99213 costs about 100 at family medicine and about 300 at cardiology."""
    claims = []
    for n in range(60):
        wobble = 1.0 + (n % 7 - 3) / 100.0
        claims.append(claim(n, member=f"M-{n}", lines=[("99213", 1, 100.0 * wobble)],
                            specialty="family_medicine"))
        claims.append(claim(1000 + n, member=f"M-c{n}", lines=[("99213", 1, 300.0 * wobble)],
                            specialty="cardiology"))
    return claims


def test_a_charge_is_held_against_its_specialty_peers() -> None:
    codes = build_code_reference(peer_population())
    family = codes.peer_charge_z("family_medicine", "99213", 100.0, 1)
    cardiology = codes.peer_charge_z("cardiology", "99213", 300.0, 1)
    assert family is not None
    assert cardiology is not None
    assert abs(family[0]) < 0.5  # each at its peers' median
    assert abs(cardiology[0]) < 0.5
    upcoded = codes.peer_charge_z("family_medicine", "99213", 300.0, 1)
    assert upcoded is not None
    assert upcoded[0] > 10
    assert upcoded[1] == pytest.approx(3.0, rel=0.02)
    # Against every specialty's mix, 300 is an ordinary price for 99213.
    overall = codes.charge_z("99213", 300.0, 1)
    assert overall is not None
    assert overall < upcoded[0] / 5
    assert codes.peer_charge_z("dermatology", "99213", 100.0, 1) is None  # no peers known


def test_the_peer_feature_is_appended_and_the_history_features_stay() -> None:
    codes = build_code_reference(peer_population())
    upcoded = claim(5000, member="M-x", lines=[("99213", 1, 300.0)], specialty="family_medicine")
    [(_, history, _)] = list(replay([upcoded], codes))
    [(_, peers, evidence)] = list(replay([upcoded], codes, peers=True))
    assert len(history) == len(HISTORY_FEATURES)
    assert len(peers) == len(PEER_FEATURES)
    assert peers[:len(HISTORY_FEATURES)] == history
    assert peers[-1] > 10
    assert (evidence.peer_code, evidence.specialty) == ("99213", "family_medicine")
    words = in_words("max_peer_charge_z", peers[-1], "high", 2.0, "99th", evidence)
    assert words == "charge 3.0x the median for code 99213 among family medicine providers"


def test_a_reference_without_peer_norms_still_loads_and_gives_no_peer_evidence() -> None:
    stored = build_code_reference(peer_population()).model_dump(mode="json")
    del stored["peer_charge"]  # a reference written before the peer norms existed
    codes = CodeReference.model_validate(stored)
    [(_, values, evidence)] = list(replay([claim(1, specialty="cardiology")], codes, peers=True))
    assert values[-1] == 0.0
    assert evidence.peer_code is None


@pytest.mark.parametrize(("log2_ratio", "shown"), [(0.39, "1.3x"), (3.0, "8.0x"),
                                                    (6.3, "79x"), (10.0, "1,024x")])
def test_rarity_words_never_round_a_small_ratio_to_1x(log2_ratio: float, shown: str) -> None:

    evidence = Evidence(None, None, "80061", None, 0.0)
    words = in_words("max_code_rarity", log2_ratio, "high", 0.0, "99th", evidence)
    assert words == f"80061 is {shown} rarer than usual for the patient's age and sex"
