"""The learning loop (``claimflow learn``): investigators' labels train a supervised
challenger, the challenger shadows the champion, and the promotion gate promotes it when it
is better. Each step is printed.

1. **wait for labels**: until ``claims.labels`` holds ``LEARN_MIN_LABELS`` closing labels
   (``fraud`` / ``legitimate``);
2. **train**: the claims on ``claims`` (read to their current end into a JSON Lines file
   under ``CLAIMFLOW_HOME/learn``) with those labels, by ``train --supervised
   --labels-topic``: a new registry version with the alias ``challenger``, which the model
   service starts scoring in shadow at its next poll;
3. **wait for the shadow period**: until the claims shadowed behind the current champion
   that investigators then closed reach ``TRAINER_PROMOTE_MIN_SHADOW_LABELLED`` for each
   model (``trainer.shadow_period``);
4. **promote through the gate** (``claimflow promote`` with the shadow period): promoted
   when not worse on the holdout and on the shadow period, else left as challenger and
   the refusal printed;
5. after a refusal, with ``LEARN_ROUNDS`` left: the next round waits for twice the closing
   labels the refused challenger had and starts again at 2.

What to do next is a pure function of what was observed (:func:`next_step`); the shell
polls every ``LEARN_POLL_S`` until ``LEARN_TIMEOUT_S``.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import click
import orjson
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from claimflow.settings import TOPICS, CommonSettings

log = logging.getLogger(__name__)



class LearnSettings(CommonSettings):
    """Settings of ``claimflow learn``."""

    model_config = SettingsConfigDict(env_prefix="LEARN_", frozen=True, extra="ignore")

    min_labels: int = Field(default=200, ge=1,
                            description="Closing labels on the labels topic before training.")
    claims_topic: str = Field(default=TOPICS.claims,
                              description="Claims the challenger learns from.")
    labels_topic: str = Field(default=TOPICS.labels, description="Investigators' labels.")
    poll_s: float = Field(default=10.0, gt=0, description="Seconds between checks.")
    timeout_s: float = Field(default=3600.0, gt=0,
                             description="Give up after this many seconds (exit code 1).")
    rounds: int = Field(default=1, ge=1,
                        description="Challengers to train at most: after a refusal the next "
                        "round waits for twice the closing labels and trains again.")


class Step(enum.Enum):
    WAIT_LABELS = "wait for labels"
    TRAIN = "train the supervised challenger"
    WAIT_SHADOW = "wait for the shadow period"
    PROMOTE = "promote through the gate"


@dataclass(frozen=True)
class Observed:
    """What the loop knows: closing labels so far, the challenger it trained (None: not
    yet), and the labelled investigate decisions of the fewer side in its shadow period."""

    labels: int = 0
    challenger: str | None = None
    shadow_labelled: int = 0


def next_step(seen: Observed, min_labels: int, min_shadow_labelled: int) -> Step:
    """The loop's next step (pure)."""
    if seen.challenger is None:
        return Step.TRAIN if seen.labels >= min_labels else Step.WAIT_LABELS
    return Step.PROMOTE if seen.shadow_labelled >= min_shadow_labelled else Step.WAIT_SHADOW


@dataclass(frozen=True)
class LoopResult:
    challenger: str
    promoted: bool
    message: str
    labels: int = 0  # closing labels when the challenger was trained


def next_round_labels(refused: LoopResult, min_labels: int) -> int:
    """Closing labels the next round waits for after a refusal (pure): twice what the
    refused challenger had, so each round learns from a markedly larger sample."""
    return 2 * max(refused.labels, min_labels)


class LearningLoop:
    """The I/O shell: reads the topics, trains and promotes with the trainer's functions."""

    def __init__(self, settings: LearnSettings, echo: Callable[[str], None]) -> None:
        from trainer.settings import TrainerSettings

        self.settings = settings
        self.trainer = TrainerSettings()
        self.echo = echo

    def run(self) -> LoopResult:
        """Rounds until a challenger is promoted or ``rounds`` challengers were refused."""
        deadline = time.monotonic() + self.settings.timeout_s
        min_labels = self.settings.min_labels
        for round_number in range(1, self.settings.rounds + 1):
            result = self.run_round(min_labels, deadline)
            if result.promoted or round_number == self.settings.rounds:
                return result
            min_labels = next_round_labels(result, min_labels)
            self.echo(f"[learn] round {round_number + 1} of {self.settings.rounds}: a new "
                      f"challenger once {min_labels} closing labels are in")
        raise AssertionError("unreachable: rounds >= 1")

    def run_round(self, min_labels: int, deadline: float) -> LoopResult:
        seen, shown = Observed(), None
        min_shadow = self.trainer.promote_min_shadow_labelled
        while True:
            step = next_step(seen, min_labels, min_shadow)
            if step is Step.PROMOTE:
                assert seen.challenger is not None
                return self.promote(seen.challenger, seen.labels)
            if step is Step.TRAIN:
                seen = Observed(seen.labels, self.train(seen.labels))
                continue
            if step is not shown:
                self.echo(f"[learn] {step.value}")
                shown = step
            if time.monotonic() > deadline:
                raise TimeoutError(f"the learning loop gave up after "
                                   f"{self.settings.timeout_s:g} s at step '{step.value}' "
                                   f"({seen})")
            time.sleep(self.settings.poll_s)  # the loop's polling interval, bounded above
            seen = self.observe(seen, min_labels)

    def observe(self, seen: Observed, min_labels: int) -> Observed:
        from trainer.data import DataError
        from trainer.label_topic import read_labels

        try:
            if seen.challenger is None:
                labels = read_labels(self.settings.kafka_bootstrap_servers,
                                     self.settings.labels_topic).labels
                closing = sum(label.closes for label in labels)
                if closing != seen.labels:
                    self.echo(f"[learn] {closing} closing label(s) of {min_labels} needed")
                return Observed(labels=closing)
            return Observed(seen.labels, seen.challenger, self.shadow_labelled(seen))
        except DataError as exc:  # a topic not there yet: keep waiting
            log.info("not yet: %s", exc)
            return seen

    def shadow_labelled(self, seen: Observed) -> int:
        from modelstore.registry import client_for
        from trainer.pipeline import current_champion
        from trainer.shadow_period import read_shadow_period

        assert seen.challenger is not None
        champion = current_champion(client_for(self.trainer.tracking_uri),
                                    self.trainer.registered_model)
        if champion is None:
            return 0
        period = read_shadow_period(
            self.settings.kafka_bootstrap_servers, self.trainer.promote_shadow_topic,
            self.settings.labels_topic, self.trainer.registered_model, champion[0],
            seen.challenger, self.trainer.promote_read_timeout_s)
        fewest = min(period.champion_labelled, period.challenger_labelled)
        if fewest != seen.shadow_labelled:
            self.echo(f"[learn] shadow period: {period.claims} claim(s) shadowed, "
                      f"{period.champion_labelled} champion / {period.challenger_labelled} "
                      "challenger investigate decision(s) labelled")
        return fewest

    def train(self, labels: int) -> str:
        from trainer.pipeline import store_config, train_supervised_and_register
        from trainer.supervised import SupervisedParams

        data = self.dump_claims()
        self.echo(f"[learn] training the supervised challenger on {data} with {labels} "
                  f"closing label(s) from {self.settings.labels_topic}")
        params = SupervisedParams(test_size=self.trainer.test_size, seed=self.trainer.seed,
                                  budget_percent=self.trainer.budget_percent)
        outcome = train_supervised_and_register(
            data, params, self.trainer, store_config(self.trainer), None,
            self.settings.labels_topic)
        metrics = outcome.metrics
        self.echo(f"[learn] challenger: {self.trainer.registered_model} version "
                  f"{outcome.run.version} ({outcome.labels_used} labels used; precision at "
                  f"budget {metrics.get('precision_at_budget', float('nan')):.4f} vs champion "
                  f"{metrics.get('champion_precision_at_budget', float('nan')):.4f}); the "
                  "model service shadows it from its next poll")
        return outcome.run.version

    def dump_claims(self) -> Path:
        """The claims topic, start to its current end, as JSON Lines (the message values)."""
        from trainer.data import DataError

        folder = self.trainer.home / "learn"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"claims-{int(time.time())}.jsonl"
        count = write_topic_values(self.settings.kafka_bootstrap_servers,
                                   self.settings.claims_topic, path,
                                   self.trainer.promote_read_timeout_s)
        if not count:
            raise DataError(f"no claims on {self.settings.claims_topic!r} to learn from")
        self.echo(f"[learn] read {count:,} claims from {self.settings.claims_topic}")
        return path

    def promote(self, challenger: str, labels: int) -> LoopResult:
        from trainer.gate import PromotionRefusedError
        from trainer.pipeline import promote

        self.echo(f"[learn] promoting version {challenger} through the gate")
        try:
            promotion = promote(self.trainer, challenger, shadow=True)
        except PromotionRefusedError as exc:
            self.echo(f"[learn] not promoted: {exc}")
            return LoopResult(challenger, promoted=False, message=str(exc), labels=labels)
        reason = "" if promotion.verdict is None else promotion.verdict.reason
        self.echo(f"[learn] version {challenger} is the champion now (gate: {reason})")
        return LoopResult(challenger, promoted=True, message=reason, labels=labels)


def submitted_at(value: bytes) -> datetime:
    """A claim message's submitted_at (the earliest possible time when it has none)."""
    try:
        return datetime.fromisoformat(orjson.loads(value)["submitted_at"])
    except (ValueError, KeyError, TypeError):
        return datetime.min.replace(tzinfo=UTC)


def write_topic_values(bootstrap: str, topic: str, path: Path, timeout_s: float) -> int:
    """Every message value of ``topic`` up to its current end (committed transactions
    only), one per line in ``submitted_at`` order; the count."""
    from trainer.topic_snapshot import read_snapshot

    values = [message.value() for message in read_snapshot(
        bootstrap, topic, what="claims", group="claimflow-learn", timeout_s=timeout_s,
        read_committed=True) if message.value()]
    # Partitions interleave claims; training splits by position in the file (the generated
    # files are in time order), so the file is put back in time order.
    values.sort(key=submitted_at)
    path.write_bytes(b"".join(value + b"\n" for value in values))
    return len(values)


@click.command("learn")
@click.option("--min-labels", type=click.IntRange(min=1), default=None,
              help="Closing labels before training  [default: LEARN_MIN_LABELS, 200]")
@click.option("--poll", "poll_s", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Seconds between checks  [default: LEARN_POLL_S, 10]")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True),
              default=None, help="Give up after this many seconds  [default: LEARN_TIMEOUT_S]")
@click.option("--rounds", type=click.IntRange(min=1), default=None,
              help="Challengers to train at most; after a refusal the next round waits for "
                   "twice the labels  [default: LEARN_ROUNDS, 1]")
@click.option("--stay", is_flag=True,
              help="After the loop, stay until SIGTERM/SIGINT (a process of `claimflow up`, "
                   "where one process ending stops the stack).")
@click.option("--log-level", default="WARNING", show_default=True, help="Python log level.")
def learn(min_labels: int | None, poll_s: float | None, timeout_s: float | None,
          rounds: int | None, stay: bool, log_level: str) -> None:
    """The learning loop: wait for investigators' labels, train a supervised challenger
    from claims.labels, wait while it shadows the champion until its shadow period has
    labelled decisions, then promote it through the gate (refused when worse). With
    --rounds N, a refusal starts another round on twice the labels, N challengers at most.
    Prints each step; exit code 0 whether promoted or refused, 1 on timeout or error."""
    from claimflow.logging_setup import configure_logging
    from trainer.data import DataError

    configure_logging(log_level.upper())
    overrides = {name: value for name, value in
                 (("min_labels", min_labels), ("poll_s", poll_s), ("timeout_s", timeout_s),
                  ("rounds", rounds))
                 if value is not None}
    settings = LearnSettings.model_validate({**LearnSettings().model_dump(), **overrides})
    try:
        LearningLoop(settings, click.echo).run()
    except (TimeoutError, DataError) as exc:
        if not stay:
            raise click.ClickException(str(exc)) from exc
        click.echo(f"[learn] stopped: {exc}", err=True)
    if stay:
        click.echo("[learn] done; staying until the stack stops")
        stay_until_signalled()


def stay_until_signalled() -> None:
    import signal
    import threading

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: stop.set())
    stop.wait()
