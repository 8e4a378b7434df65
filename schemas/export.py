"""JSON Schema files generated from the contracts (committed; a test fails on drift)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from schemas.claim import Claim
from schemas.claim_v2 import ClaimV2
from schemas.dead_letter import DeadLetter
from schemas.decision import Decision
from schemas.label import Label
from schemas.shadow import ShadowScore

JSON_DIR = Path(__file__).parent / "json"
SCHEMA_FILES: dict[str, type[BaseModel]] = {
    "claim.schema.json": Claim,
    "claim_v2.schema.json": ClaimV2,
    "decision.schema.json": Decision,
    "dead_letter.schema.json": DeadLetter,
    "label.schema.json": Label,
    "shadow_score.schema.json": ShadowScore,
}


def render_schema(model: type[BaseModel], file_name: str) -> str:
    schema = model.model_json_schema(mode="validation")
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"claimflow/{file_name}",
        **schema,
    }
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def rendered_schemas() -> dict[str, str]:
    return {name: render_schema(model, name) for name, model in SCHEMA_FILES.items()}


def export_schemas(target: Path = JSON_DIR) -> list[Path]:
    """Write every schema file that differs; returns the files written."""
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in rendered_schemas().items():
        path = target / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            written.append(path)
    return written
