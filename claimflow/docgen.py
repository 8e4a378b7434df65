"""Reference sections of README.md generated from the code, so they cannot drift.

``python -m claimflow.docgen`` rewrites the blocks between ``<!-- BEGIN GENERATED: x -->``
and ``<!-- END GENERATED: x -->`` in README.md; a unit test fails when they are stale.
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import click
from pydantic import AliasChoices
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from claimflow.cli import COMMANDS, cli

README = Path(__file__).resolve().parent.parent / "README.md"

# (section title, "module:Class"); imported lazily like the CLI's subcommands.
SETTINGS_CLASSES: tuple[tuple[str, str], ...] = (
    ("Shared by every service", "claimflow.settings:CommonSettings"),
    ("Local broker and topics (`claimflow kafka`, `topics`)", "broker.settings:KafkaSettings"),
    ("Producer (`claimflow generate`, `claimflow produce`)", "producer.settings:ProducerSettings"),
    ("Synthea profile (`--profile synthea`, `claimflow synthea install`)",
     "producer.synthea_settings:SyntheaSettings"),
    ("Trainer (`claimflow train`, `promote`, `mlflow-ui`)", "trainer.settings:TrainerSettings"),
    ("Model service (`claimflow serve-model`)", "scorer.model_settings:ModelSettings"),
    ("Stream worker (`claimflow score`, `tail`)", "scorer.worker_settings:ScorerSettings"),
    ("Gateway (`claimflow gateway`)", "gateway.settings:GatewaySettings"),
    ("Simulated investigators (`claimflow investigate`)",
     "claimflow.investigate_run:InvestigateSettings"),
    ("Learning loop (`claimflow learn`)", "claimflow.learning_loop:LearnSettings"),
    ("Demo stack (`claimflow up`, `down`)", "claimflow.stack_plan:StackSettings"),
)


def load_class(target: str) -> type[BaseSettings]:
    module_name, name = target.split(":")
    cls: type[BaseSettings] = getattr(importlib.import_module(module_name), name)
    assert issubclass(cls, BaseSettings)
    return cls


def env_name(cls: type[BaseSettings], field_name: str, field: FieldInfo) -> str:
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        first = alias.choices[0]
        return str(first)
    if isinstance(alias, str):
        return alias
    prefix = str(cls.model_config.get("env_prefix") or "")
    return f"{prefix}{field_name}".upper()


def default_text(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return "(computed)"
    value = field.get_default()
    if value is None:
        return "(unset)"
    if hasattr(value, "get_secret_value"):
        return "(unset)" if not value.get_secret_value() else "(secret)"
    text = str(value)
    return f"`{text}`" if text else '`""`'


def settings_table() -> str:
    common = load_class("claimflow.settings:CommonSettings")
    lines: list[str] = []
    for title, target in SETTINGS_CLASSES:
        cls = load_class(target)
        own = [
            (name, field)
            for name, field in cls.model_fields.items()
            if cls is common or name not in common.model_fields
        ]
        lines += [f"**{title}**", "", "| variable | default | meaning |", "|---|---|---|"]
        for name, field in own:
            description = (field.description or "").replace("|", "\\|").replace("\n", " ")
            lines.append(
                f"| `{env_name(cls, name, field)}` | {default_text(field)} | {description} |"
            )
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def command_help(path: list[str], command: click.Command) -> list[str]:
    ctx = click.Context(command, info_name=" ".join(["claimflow", *path]))
    usage = command.get_usage(ctx).removeprefix("Usage: ")
    lines = [f"#### `{' '.join(['claimflow', *path])}`", ""]
    lines += [" ".join((command.help or "").strip().split("\n\n")[0].split()), ""]
    lines += ["```", usage]
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record and "--help" not in record[0]:
            lines.append(f"  {record[0]:<34} {record[1]}".rstrip())
    lines += ["```", ""]
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None:
                lines += command_help([*path, name], sub)
    return lines


def cli_reference() -> str:
    ctx = click.Context(cli, info_name="claimflow")
    lines: list[str] = []
    for name in sorted(COMMANDS):
        command = cli.get_command(ctx, name)
        if command is not None:
            lines += command_help([name], command)
    return "\n".join(lines).rstrip() + "\n"


GENERATORS = {"settings": settings_table, "cli": cli_reference}
BLOCK = re.compile(
    r"(<!-- BEGIN GENERATED: (?P<name>[a-z]+) -->\n)"
    r"(?P<body>.*?)"
    r"(<!-- END GENERATED: (?P=name) -->)",
    re.DOTALL,
)


def render(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        body = GENERATORS[match.group("name")]()
        return f"{match.group(1)}{body}{match.group(4)}"

    return BLOCK.sub(replace, text)


def main() -> int:
    text = README.read_text(encoding="utf-8")
    rendered = render(text)
    if rendered != text:
        README.write_text(rendered, encoding="utf-8")
        print(f"updated {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
