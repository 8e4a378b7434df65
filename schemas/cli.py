"""``claimflow schemas``: the message contracts as JSON Schema."""

from __future__ import annotations

from pathlib import Path

import click

from schemas.export import JSON_DIR, export_schemas


@click.group("schemas")
def schemas_group() -> None:
    """Message contracts (Claim, Decision, DeadLetter, Label)."""


@schemas_group.command("export")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=JSON_DIR,
    show_default="schemas/json in the installed package",
    help="Folder for the *.schema.json files.",
)
def export(out_dir: Path) -> None:
    """Write JSON Schema files for every contract (no-op when up to date)."""
    written = export_schemas(out_dir)
    if not written:
        click.echo(f"schemas up to date in {out_dir}")
    for path in written:
        click.echo(f"wrote {path}")
