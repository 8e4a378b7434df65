"""The trainer's --feature-set choices are the feature sets (listed by name there so that
`claimflow --help` does not import numpy)."""

from features.sets import FEATURE_SETS
from trainer.cli import FEATURE_SET_NAMES


def test_the_cli_offers_every_feature_set() -> None:
    assert list(FEATURE_SET_NAMES) == list(FEATURE_SETS)
