"""The ``claimflow`` command: wires together the subcommands that each package owns.

Subcommands are imported only when they run, so ``claimflow --help`` stays fast even
though training pulls in MLflow and serving pulls in BentoML.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import click

from claimflow import __version__


@dataclass(frozen=True)
class LazyCommand:
    target: str  # "package.module:attribute"
    summary: str

    def load(self) -> click.Command:
        module_name, attribute = self.target.split(":")
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{self.target} is not a click command")
        return command


COMMANDS: dict[str, LazyCommand] = {
    "schemas": LazyCommand("schemas.cli:schemas_group", "Message contracts: export JSON Schema."),
    "kafka": LazyCommand("broker.cli:kafka_group", "Local single-node Kafka broker."),
    "topics": LazyCommand("broker.cli:topics_group", "Create the claimflow topics."),
    "generate": LazyCommand("producer.cli:generate",
                            "Generate synthetic claims to a file (JSON Lines or CSV)."),
    "synthea": LazyCommand("producer.synthea_cli:synthea_group",
                           "Synthea, the source of --profile synthea: fetch its jars."),
    "produce": LazyCommand("producer.cli:produce", "Stream claims into Kafka."),
    "train": LazyCommand("trainer.cli:train", "Train an Isolation Forest, tracked in MLflow."),
    "promote": LazyCommand("trainer.cli:promote", "Make a model version the champion."),
    "mlflow-ui": LazyCommand("trainer.cli:mlflow_ui", "Open the MLflow UI on the local store."),
    "serve-model": LazyCommand("scorer.cli:serve_model", "Run the BentoML model service."),
    "score": LazyCommand("scorer.cli:score", "Run the exactly-once stream scorer."),
    "tail": LazyCommand("scorer.cli:tail", "Print decisions from an outcome topic."),
    "score-file": LazyCommand("scorer.cli:score_file",
                              "Decide a file of claims offline, as the stream would."),
    "gateway": LazyCommand("gateway.cli:gateway", "Run the HTTP gateway and outcome view."),
    "investigate": LazyCommand("claimflow.investigate_run:investigate",
                               "Simulated investigators: label queued claims from ground truth."),
    "learn": LazyCommand("claimflow.learning_loop:learn",
                         "Labels -> supervised challenger -> shadow -> gated promotion."),
    "up": LazyCommand("claimflow.stack:up", "Run the whole demo stack."),
    "down": LazyCommand("claimflow.stack:down", "Stop a stack left running in the background."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        lazy = COMMANDS.get(cmd_name)
        return lazy.load() if lazy else None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name].summary) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="claimflow")
def cli() -> None:
    """Triage health-insurance claims: approve the normal, investigate the unusual."""


def main() -> None:
    cli()
