"""The two sides of the member-stage A/B (``bench.ab_quixstreams``), one process each.

    python -m bench.ab_member_sides SIDE --bootstrap B --input T --output T --group G
        --claims N [--commit-interval S] [--state-dir D] [--expect-more K]

The job, the same on both sides: consume v2 claims keyed by member_id, keep each member's
history with ``features.member`` (``member_features`` from the history before the claim,
``remember`` after it, the state stored as ``encode_history`` bytes), write an output record
per claim and the state to a changelog, exactly once.

* ``quix``: quixstreams (``Application(processing_guarantee="exactly-once")``,
  ``sdf.apply(step, stateful=True)``, RocksDB store with its changelog topic,
  ``sdf.to_topic``); its output is the claim's member context (JSON). Runs in a throwaway
  virtualenv with quixstreams installed (see docs/member-stage.md), and imports nothing but
  quixstreams, confluent_kafka, orjson, ``features`` and ``schemas``.
* ``ours``: the real ``scorer.loop.ScoringLoop`` (batches, member stage, changelog in the
  batch's transaction, routing and decision encoding), in process, with the model service
  replaced by a trivial local scorer (score from the member's 30-day count, no reasons): the
  member stage's job with our worker's machinery and no model cost. Its output is the
  decision record (a little larger than quix's context).
* ``ours-nostate``: the same loop with the member step replaced by "no history" (no state,
  no changelog): what our loop costs without the member stage, on the same claims.

Both report, as JSON on stdout: ``first_message_s`` (process start to the first claim
processed: imports, group join, restore), ``claims_per_s`` from the first claim processed to
the group's committed offsets covering all ``claims`` (``processing_only_per_s``: to the last
claim processed), ``cpu_us_per_claim`` (the process's CPU, all threads, over that window:
robust to the shared machine's load, unlike the rates), and with ``--expect-more K``: the
seconds from process start to the first new claim processed after a restore
(``restore_to_first_new_s``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

STARTED = time.perf_counter()


class Clock:
    """Moments of the run, relative to process start."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.first_cpu = 0.0  # process CPU seconds (all threads) at the first claim
        self.last: float | None = None
        self.processed = 0
        self.done = threading.Event()

    def tick(self) -> None:
        now = time.perf_counter() - STARTED
        if self.first is None:
            self.first = now
            self.first_cpu = time.process_time()
        self.last = now
        self.processed += 1


def watch_committed(bootstrap: str, group: str, topic: str, target: int, clock: Clock,
                    on_done: Callable[[], None], timeout_s: float) -> dict[str, Any]:
    """Poll the group's committed offsets until they sum to ``target``; then ``on_done``."""
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                      "enable.auto.commit": False})
    partitions = [TopicPartition(topic, p)
                  for p in probe.list_topics(topic, timeout=10).topics[topic].partitions]
    result: dict[str, Any] = {"committed_s": None}
    deadline = time.perf_counter() + timeout_s
    try:
        while time.perf_counter() < deadline:
            try:
                committed = sum(max(tp.offset, 0)
                                for tp in probe.committed(partitions, timeout=10))
            except KafkaException as exc:  # e.g. the coordinator still loading: ask again
                logging.getLogger(__name__).warning("committed offsets: %s", exc)
                committed = -1
            if committed >= target:
                result["committed_s"] = time.perf_counter() - STARTED
                result["cpu_s"] = time.process_time() - clock.first_cpu
                break
            time.sleep(0.02)  # probing the group's offsets, bounded by the deadline
    finally:
        probe.close()
        on_done()
    return result


# --------------------------------------------------------------------------- quixstreams


def run_quix(args: argparse.Namespace, clock: Clock
             ) -> tuple[Callable[[], None], Callable[[], None]]:
    import orjson
    from quixstreams import Application, State

    from features.member import (
        MemberHistory,
        decode_history,
        encode_history,
        member_features,
        remember,
    )
    from schemas import ClaimV2

    app = Application(
        broker_address=args.bootstrap, consumer_group=args.group,
        processing_guarantee="exactly-once", auto_offset_reset="earliest",
        commit_interval=args.commit_interval, state_dir=args.state_dir,
        loglevel="WARNING",
    )
    claims = app.topic(args.input, key_deserializer="bytes", value_deserializer="bytes")
    out = app.topic(args.output, key_serializer="bytes", value_serializer="bytes")
    empty = MemberHistory()

    def step(value: bytes, state: State) -> bytes:
        claim = ClaimV2.from_json(value)
        held = state.get("history")
        history = empty if held is None else decode_history(held.encode())
        features = member_features(claim, history)
        state.set("history", encode_history(remember(history, claim)).decode())
        clock.tick()
        return orjson.dumps({"claim_id": claim.claim_id, **features._asdict()})

    sdf = app.dataframe(claims).apply(step, stateful=True)
    sdf.to_topic(out)
    # app.run() installs signal handlers: it has to run on the main thread.
    return app.run, app.stop


# --------------------------------------------------------------------------- our worker


class TrivialScorer:
    """Stands in for the model service: an answer per claim without any model."""

    def __init__(self, clock: Clock) -> None:
        from schemas import ModelRef

        self.clock = clock
        self.ref = ModelRef(name="trivial", version="0")

    def score_batch(self, claims: Sequence[Any], members: Sequence[Any] | None = None
                    ) -> list[Any]:
        from schemas import ScoreResult

        answers = []
        for i, claim in enumerate(claims):
            score = 0.0 if members is None else min(1.0, members[i].claims_30d / 100)
            answers.append(ScoreResult.model_construct(
                claim_id=claim.claim_id, anomaly_score=score,
                threshold=0.5, decision="investigate" if score > 0.5 else "approve",
                model=self.ref, reasons=[]))
            self.clock.tick()
        return answers

    def close(self) -> None:
        return None


def run_ours(args: argparse.Namespace, clock: Clock, stateful: bool
             ) -> tuple[Callable[[], None], Callable[[], None]]:
    import gc

    from confluent_kafka import Producer
    from prometheus_client import CollectorRegistry

    from features.member import NO_HISTORY
    from scorer import loop as loop_module
    from scorer.kafka_config import cluster_calls, consumer_config, producer_config
    from scorer.loop import ScoringLoop
    from scorer.member_state import MemberStep
    from scorer.worker_metrics import WorkerMetrics
    from scorer.worker_settings import ScorerSettings

    if not stateful:
        def no_state(_store: Any, claims: Sequence[Any], _positions: Sequence[Any]
                     ) -> MemberStep:
            return MemberStep([NO_HISTORY] * len(claims), {})

        loop_module.member_step = no_state  # type: ignore[attr-defined,assignment]
    settings = ScorerSettings(
        kafka_bootstrap_servers=args.bootstrap, input_topic=args.input,
        approved_topic=args.output, investigate_topic=args.output,
        deadletter_topic=args.output, group_id=args.group,
        transactional_id_prefix=args.group,
    )
    stop_event = threading.Event()
    consumer = Consumer(consumer_config(settings, 0))
    config = producer_config(settings, 0)
    loop = ScoringLoop(settings, consumer, lambda: Producer(config),
                       TrivialScorer(clock),  # type: ignore[arg-type]
                       WorkerMetrics(CollectorRegistry()), stop_event,
                       cluster=cluster_calls(settings))
    loop.subscribe()
    gc.collect()
    gc.freeze()

    def serve() -> None:
        try:
            loop.run()
        finally:
            consumer.close()

    return serve, stop_event.set


# --------------------------------------------------------------------------- entry point


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.ab_member_sides")
    parser.add_argument("side", choices=["quix", "ours", "ours-nostate"])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--claims", type=int, required=True,
                        help="input messages the group's committed offsets must reach")
    parser.add_argument("--commit-interval", type=float, default=5.0, help="quix only")
    parser.add_argument("--state-dir", default="state", help="quix only")
    parser.add_argument("--expect-more", type=int, default=0,
                        help="claims produced after this process started (restore runs): "
                             "only the time to the first of them is measured")
    parser.add_argument("--timeout", type=float, default=900)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    clock = Clock()
    if args.side == "quix":
        serve, stop = run_quix(args, clock)
    else:
        serve, stop = run_ours(args, clock, stateful=args.side == "ours")
    watched: dict[str, Any] = {"committed_s": None}

    def watch() -> None:
        watched.update(watch_committed(args.bootstrap, args.group, args.input, args.claims,
                                       clock, stop, args.timeout))

    watcher = threading.Thread(target=watch, name="watch-committed", daemon=True)
    watcher.start()
    serve()  # until the watcher stops it (or it fails)
    watcher.join(5)
    first, last, committed = clock.first, clock.last, watched["committed_s"]
    result: dict[str, Any] = {"side": args.side, "processed": clock.processed,
                              "first_message_s": first, "last_message_s": last,
                              "committed_s": committed}
    if args.expect_more:
        result["restore_to_first_new_s"] = first
    elif first is not None and last is not None and committed is not None:
        result["claims_per_s"] = args.claims / (committed - first)
        result["processing_only_per_s"] = args.claims / (last - first) if last > first else None
        # CPU of this process (every thread: librdkafka's, RocksDB's) per claim over the same
        # window: what the side costs, whatever else the shared machine ran meanwhile.
        result["cpu_us_per_claim"] = watched["cpu_s"] / args.claims * 1e6
        result["cores"] = watched["cpu_s"] / (committed - first)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0 if committed is not None else 1


if __name__ == "__main__":
    sys.exit(main())
