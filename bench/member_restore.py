"""Member state restore: a worker is lost while its partitions hold 1M members' state.

    python -m bench.member_restore [--smoke]

The scenario of issue 16's goal ("state restore after losing a worker with 1M members'
state: <= 10 s to committing again"), against a real broker, a real ``bentoml serve`` with
a v2-history champion and real ``claimflow score`` processes:

1. The state. ``claimflow generate --profile realistic`` claims, their member histories
   built by ``features.member.remember`` in file order and encoded by ``encode_history``
   (exactly what the member stage writes). The realistic profile has one member per ~6
   claims, so the distinct histories come from ``history_rows`` claims; to reach
   ``members`` records each history is also written under copies of its member id
   (``<member>x<k>``), same bytes. The records go straight to the group's compacted
   changelog ``<group>.member-state`` (6 partitions, the worker's topic settings), keyed by
   member_id with the default partitioner, i.e. on the partition of the member's claims.
2. ``restore_in_process``: ``scorer.member_state.restore_partitions`` over all 6 partitions
   in this process: the read alone, no worker.
3. The stream: the file's last ``stream_rows`` claims (members with state) produced keyed
   by member_id at ``rate`` claims/s. Worker ``a`` (``claimflow score``, one process, all
   6 partitions) starts, restores and commits (``first_worker``). Once it has committed a
   part of the stream it is SIGKILLed and worker ``b`` is started at once with the same
   transactional.id, as a supervisor would (``replacement``): ``start_to_first_commit_s``
   is from ``b``'s process start to the group's committed offsets moving past what ``a``
   had committed (the goal's figure: it includes interpreter start, imports, waiting for
   the group to drop the dead member (session timeout 6 s), the restore and the first
   batch); ``restore_s`` and ``restored_members`` are from ``b``'s log line
   "restored <topic> partitions 0,...,5: N members in S s".
4. At the end every stream claim must have exactly one committed decision.
5. ``static``: steps 3 and 4 again, right after, on a copy of the same changelog with its own
   group and topics, with ``SCORER_STATIC_MEMBERSHIP=true``: the replacement joins under the
   killed worker's group.instance.id, so the coordinator gives it the partitions without
   waiting for the dead member's session to expire.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from bench.common import emit, machine_info
from bench.member_common import (
    build_histories,
    clean_env,
    create_changelog,
    generate_v2,
    history_champion,
    iter_unlabelled,
    state_records,
    write_changelog,
)
from bench.stack_harness import CLAIMFLOW, ManagedProcess, Topics
from bench.stream_scoring import (
    CLAIM_PARTITIONS,
    committed_total,
    count_committed,
    create_topics,
    model_service,
)
from claimflow.settings import TOPICS, CommonSettings
from schemas import ClaimV2
from scorer.member_state import restore_partitions

logger = logging.getLogger(__name__)

GOAL_S = 10.0
RESTORED = re.compile(r"restored (\S+) partitions ([\d,]+): (\d+) members in ([\d.]+) s")


@dataclass(frozen=True)
class Sizes:
    members: int  # changelog records (distinct member ids)
    history_rows: int  # claims the distinct histories are built from
    stream_rows: int  # claims streamed while the worker is killed and replaced
    rate: float  # claims/s of the stream
    kill_fraction: float  # of the stream committed before the kill
    train_rows: int
    trees: int


FULL = Sizes(members=1_000_000, history_rows=1_200_000, stream_rows=60_000, rate=2_000,
             kill_fraction=0.3, train_rows=20_000, trees=100)
SMOKE = Sizes(members=20_000, history_rows=30_000, stream_rows=3_000, rate=1_000,
              kill_fraction=0.3, train_rows=4_000, trees=30)


def parse_restored(text: str) -> dict[str, Any] | None:
    """The worker's restore log line (the last one, if several) as numbers; pure."""
    found = RESTORED.findall(text)
    if not found:
        return None
    topic, partitions, members, seconds = found[-1]
    return {"topic": topic, "partitions": [int(p) for p in partitions.split(",")],
            "members": int(members), "seconds": float(seconds)}


def start_worker(name: str, bootstrap: str, home: Path, topics: Topics, group: str,
                 model_url: str, static: bool = False) -> ManagedProcess:
    """One ``claimflow score`` process (worker defaults, or static group membership); the
    transactional.id prefix is the group's, so a replacement fences its killed predecessor
    (and, as a static member, takes over its group.instance.id)."""
    env = clean_env(
        SCORER_STATIC_MEMBERSHIP="true" if static else "false",
        CLAIMFLOW_HOME=str(home), KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        SCORER_INPUT_TOPIC=topics.claims, SCORER_APPROVED_TOPIC=topics.approved,
        SCORER_INVESTIGATE_TOPIC=topics.investigate, SCORER_DEADLETTER_TOPIC=topics.deadletter,
        SCORER_GROUP_ID=group, SCORER_MODEL_URL=model_url,
        SCORER_TRANSACTIONAL_ID_PREFIX=group,
    )
    return ManagedProcess(f"score-{name}", [*CLAIMFLOW, "score"], env,
                          home / "logs" / f"score-{name}.log").start()


class PacedProducer(threading.Thread):
    """Produces claims keyed by member_id at a fixed rate (the stream under way)."""

    def __init__(self, bootstrap: str, topic: str, lines: list[bytes], keys: list[bytes],
                 rate: float) -> None:
        super().__init__(name="paced-producer", daemon=True)
        from confluent_kafka import Producer

        self.producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                                  "linger.ms": 5})
        self.topic, self.lines, self.keys, self.rate = topic, lines, keys, rate
        self.errors: list[str] = []
        self.undelivered = 0

    def run(self) -> None:
        started = time.perf_counter()
        for i, (key, value) in enumerate(zip(self.keys, self.lines, strict=True)):
            wait = started + i / self.rate - time.perf_counter()
            if wait > 0:
                time.sleep(wait)  # pacing to the target rate
            self.producer.produce(self.topic, value, key, on_delivery=self._delivered)
            self.producer.poll(0)
        self.undelivered = self.producer.flush(60)

    def _delivered(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.errors.append(str(err))


def wait_committed_past(probe: Consumer, partitions: list[TopicPartition], count: int,
                        worker: ManagedProcess, timeout_s: float) -> float:
    """Seconds until the group's committed offsets sum past ``count``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if not worker.alive():
            raise RuntimeError(f"{worker.name} exited:\n{worker.log_tail()}")
        if committed_total(probe, partitions) > count:
            return time.monotonic() - started
        time.sleep(0.02)  # probing the group's offsets, bounded by the deadline
    raise RuntimeError(f"{worker.name}: no commit past {count} within {timeout_s:.0f} s:\n"
                       f"{worker.log_tail()}")


def wait_restore_line(worker: ManagedProcess, timeout_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = parse_restored(worker.log_path.read_text(encoding="utf-8", errors="replace"))
        if found is not None:
            return found
        time.sleep(0.1)  # the log is written by the worker, bounded by the deadline
    raise RuntimeError(f"{worker.name} logged no restore line:\n{worker.log_tail()}")


def populate(bootstrap: str, home: Path, sizes: Sizes, changelogs: list[str]
             ) -> tuple[dict[str, Any], list[bytes], list[bytes]]:
    """Write the state to each changelog (one per variant, same records); return its figures
    and the stream (values, keys)."""
    started = time.perf_counter()
    path = generate_v2(home / "claims.jsonl", sizes.history_rows + sizes.stream_rows, seed=31)
    lines = iter_unlabelled(path)
    # One claim at a time: only the histories and the stream's claims stay in memory.
    histories = build_histories(ClaimV2.from_json(line)
                                for line in itertools.islice(lines, sizes.history_rows))
    stream = list(lines)
    built_s = time.perf_counter() - started
    for changelog in changelogs:
        create_changelog(bootstrap, changelog, CLAIM_PARTITIONS)
        written = write_changelog(bootstrap, changelog,
                                  state_records(histories, sizes.members))
    keys = [ClaimV2.from_json(line).member_id.encode() for line in stream]
    recent = [len(h.recent) for h in histories.values()]
    prints = [len(h.fingerprints) for h in histories.values()]
    return {
        "members": written["records"], "distinct_histories": len(histories),
        "history_claims": sizes.history_rows,
        "mean_recent_claims": sum(recent) / len(recent),
        "mean_fingerprints": sum(prints) / len(prints),
        "record_bytes_mean": written["bytes"] / max(1, written["records"]),
        "changelog_mb": written["bytes"] / 1e6,
        "build_s": built_s, "write_s": written["seconds"],
        "stream_members_with_state": sum(1 for k in keys if k.decode() in histories)
        / max(1, len(keys)),
    }, stream, keys


def run(smoke: bool = False) -> dict[str, Any]:
    sizes = SMOKE if smoke else FULL
    load_at_start = os.getloadavg()
    bootstrap = CommonSettings().kafka_bootstrap_servers
    admin = AdminClient({"bootstrap.servers": bootstrap})
    with tempfile.TemporaryDirectory(prefix="claimflow-bench-restore-") as tmp:
        home = Path(tmp)
        champion = history_champion(home, sizes.train_rows, n_estimators=sizes.trees)
        topics = create_topics(admin, "restore")
        static_topics = create_topics(admin, "restore-static")
        group = f"bench-restore-{uuid.uuid4().hex[:8]}"
        static_group = f"{group}-static"
        changelog, static_changelog = TOPICS.changelog(group), TOPICS.changelog(static_group)
        try:
            state, stream, keys = populate(bootstrap, home, sizes, [changelog, static_changelog])
            load_before_restore = os.getloadavg()
            started = time.perf_counter()
            restored = restore_partitions({"bootstrap.servers": bootstrap,
                                           "group.id": f"{group}.probe"},
                                          changelog, list(range(CLAIM_PARTITIONS)))
            in_process = {"seconds": time.perf_counter() - started,
                          "members": sum(map(len, restored.values()))}
            del restored
            with model_service(home, champion.tag) as service:
                figures = kill_and_replace(bootstrap, home, topics, group, service.url,
                                           stream, keys, sizes)
                static = kill_and_replace(bootstrap, home, static_topics, static_group,
                                          service.url, stream, keys, sizes, static=True)
            decisions = count_committed(bootstrap, [topics.approved, topics.investigate])
            static_decisions = count_committed(bootstrap, [static_topics.approved,
                                                           static_topics.investigate])
        finally:
            for future in admin.delete_topics([*topics.all, *static_topics.all, changelog,
                                               static_changelog]).values():
                future.result(30)
    replacement = figures["replacement"]
    met = (replacement["start_to_first_commit_s"] <= GOAL_S
           and replacement["restored_members"] >= sizes.members)
    static_replacement = static["replacement"]
    static["decisions"] = static_decisions
    static["exactly_once"] = static_decisions == len(stream)
    static["goal_met"] = (static_replacement["start_to_first_commit_s"] <= GOAL_S
                          and static_replacement["restored_members"] >= sizes.members)
    return {
        "benchmark": "member_restore", "smoke": smoke, "sizes": sizes.__dict__,
        "state": state, "restore_in_process": in_process,
        **figures,
        "decisions": decisions, "exactly_once": decisions == len(stream),
        # The same kill and replacement with SCORER_STATIC_MEMBERSHIP=true, same state
        # (its own copy of the changelog, its own group and topics), right after.
        "static": static,
        "goal_s": GOAL_S, "goal_met": met,
        "load_average": {"start": list(load_at_start), "before_restore": list(load_before_restore),
                         "end": list(os.getloadavg())},
        "machine": machine_info(),
    }


def kill_and_replace(bootstrap: str, home: Path, topics: Topics, group: str, model_url: str,
                     stream: list[bytes], keys: list[bytes], sizes: Sizes,
                     static: bool = False) -> dict[str, Any]:
    partitions = [TopicPartition(topics.claims, p) for p in range(CLAIM_PARTITIONS)]
    # read_uncommitted: a read_committed client asks for *stable* offsets, which a worker
    # killed inside a transaction holding offsets withholds until its replacement's
    # init_transactions aborts it, and the replacement starts only after this probe answers.
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                      "isolation.level": "read_uncommitted"})
    producer = PacedProducer(bootstrap, topics.claims, stream, keys, sizes.rate)
    suffix = "-static" if static else ""
    first = start_worker(f"a{suffix}", bootstrap, home, topics, group, model_url, static)
    replacement: ManagedProcess | None = None
    try:
        producer.start()
        first_commit = wait_committed_past(probe, partitions, 0, first, 180)
        first_restore = wait_restore_line(first)
        kill_at = int(sizes.kill_fraction * len(stream))
        wait_committed_past(probe, partitions, kill_at, first, 300)
        first.kill()
        committed_at_kill = committed_total(probe, partitions)
        load_at_kill = os.getloadavg()
        replacement = start_worker(f"b{suffix}", bootstrap, home, topics, group, model_url,
                                   static)
        to_commit = wait_committed_past(probe, partitions, committed_at_kill, replacement, 180)
        restore = wait_restore_line(replacement)
        producer.join(600)
        deadline = time.monotonic() + 300
        while committed_total(probe, partitions) < len(stream):
            if time.monotonic() > deadline or not replacement.alive():
                raise RuntimeError(f"stream not drained:\n{replacement.log_tail()}")
            time.sleep(0.1)  # waiting for the backlog, bounded by the deadline
    finally:
        for worker in (first, replacement):
            if worker is not None:
                worker.stop(30)
        probe.close()
    return {
        "first_worker": {"start_to_first_commit_s": first_commit,
                         "restore_s": first_restore["seconds"],
                         "restored_members": first_restore["members"]},
        "replacement": {"start_to_first_commit_s": to_commit,
                        "restore_s": restore["seconds"],
                        "restored_members": restore["members"],
                        "committed_at_kill": committed_at_kill,
                        "load_average_at_kill": list(load_at_kill)},
        "stream": {"claims": len(stream), "rate_per_s": sizes.rate,
                   "producer_errors": len(producer.errors) + producer.undelivered},
    }


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    emit(run(smoke="--smoke" in sys.argv))
