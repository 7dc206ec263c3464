"""The example config the README points at stays loadable."""

from pathlib import Path

from engine.config import load


def test_example_config_loads():
    config = load(Path(__file__).parent.parent / "examples" / "exchange.toml")
    assert {c.id for c in config.campaigns} == {"insureco-west", "quotehub-all", "quotehub-fixed"}
