"""The example config the README points at stays loadable."""

from pathlib import Path

from pingpost.config import load


def test_example_config_loads():
    config = load(Path(__file__).parent.parent / "examples" / "exchange.toml")
    assert {c.id for c in config.campaigns} == {"insureco-west", "quotehub-all", "quotehub-fixed"}


def test_every_config_error_is_listed_with_its_path(tmp_path):
    """Shape errors and the checks across sections, from every section, in one report."""
    import pytest

    from pingpost.config import ConfigError

    path = tmp_path / "bad.toml"
    path.write_text('''
[exchange]
auction_timeout_ms = -5
timezone = "Mars/Base"
foo = 1
[[sellers]]
id = "acme"
api_keys = ["short"]
[[buyers]]
id = "b1"
[[campaigns]]
id = "c1"
buyer = "b2"
vertical = "auto\\n"
post_url = "ftp://x"
fixed_price = 1.0
filters = { states = ["ZZ"], min_quality = 500, schedule = { start = "09:00", end = "09:00" } }
''')
    with pytest.raises(ConfigError) as caught:
        load(path)
    paths = {where for where, _ in caught.value.errors}
    assert paths == {
        "exchange.foo", "exchange.auction_timeout_ms", "exchange.timezone", "sellers[0].api_keys[0]",
        "campaigns[0].vertical", "campaigns[0].post_url", "campaigns[0].filters.min_quality",
        "campaigns[0].buyer", "campaigns[0].filters.states[0]", "campaigns[0].filters.schedule",
    }
