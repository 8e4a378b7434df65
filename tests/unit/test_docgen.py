"""The README's reference sections are generated from the code; they must not go stale."""

from __future__ import annotations

from claimflow.docgen import README, SETTINGS_CLASSES, load_class, render, settings_table


def test_readme_generated_sections_are_current() -> None:
    text = README.read_text(encoding="utf-8")
    assert render(text) == text, "README is stale: run `python -m claimflow.docgen`"


def test_settings_table_names_every_setting_of_every_service() -> None:
    table = settings_table()
    for _, target in SETTINGS_CLASSES:
        cls = load_class(target)
        prefix = str(cls.model_config.get("env_prefix") or "")
        for name, field in cls.model_fields.items():
            if field.validation_alias is None and prefix:
                assert f"`{prefix}{name.upper()}`" in table


def test_settings_table_lists_the_shared_settings_once() -> None:
    assert settings_table().count("`KAFKA_BOOTSTRAP_SERVERS`") == 1
