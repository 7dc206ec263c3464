"""``pingpost check --config FILE``: every error with its path, or a one-line OK, and
nothing started."""

from __future__ import annotations

from tests.helpers_process import ROOT, run_cli, write_config
from tests.support.exchange import base_config


async def test_a_good_file_is_one_ok_line_and_exit_0(buyers, tmp_path):
    """The command ends by itself (``run_cli`` waits for it) and no buyer is called."""
    config = base_config(buyers, {"id": "c1"}, {"id": "c2", "active": False},
                         {"id": "c3", "ping_url": None, "fixed_price": 4.5})
    path = write_config(tmp_path, config)
    code, out, err = await run_cli("check", "--config", str(path))
    assert code == 0 and err == ""
    assert out == f"OK: {path}: sellers 2, buyers 3, campaigns 3 (2 active)\n"
    assert buyers.pings == {} and buyers.posts == {}


async def test_the_example_config_passes(tmp_path):
    code, out, _ = await run_cli("check", "--config", "examples/exchange.toml", cwd=ROOT)
    assert code == 0 and out.startswith("OK: examples/exchange.toml: ")


async def test_a_bad_file_lists_every_error_with_its_path(buyers, tmp_path, monkeypatch):
    monkeypatch.delenv("PP_CHECK_MISSING", raising=False)
    config = base_config(buyers, {"id": "c1", "ping_url": "http://127.0.0.1:99999/ping"},
                         {"id": "c2", "headers": {"X-Token": "a\r\nX-Injected: 1", "Host": "elsewhere"}},
                         {"id": "c3", "buyer": "nobody", "headers": {"X-Key": "env:PP_CHECK_MISSING"}})
    config["exchange"]["metrics_allowed_ips"] = ["not-a-network"]
    config["exchange"]["unknown"] = 1
    config["sellers"][0]["api_keys"] = ["short"]
    code, out, err = await run_cli("check", "--config", str(write_config(tmp_path, config)))
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert lines[0] == f"pingpost: {tmp_path / 'exchange.json'} is not a valid config:"
    assert sorted(line.split(": ", 1)[0].strip() for line in lines[1:]) == sorted([
        "campaigns[2].headers.X-Key", "exchange.unknown", "exchange.metrics_allowed_ips[0]",
        "sellers[0].api_keys[0]", "campaigns[0].ping_url", "campaigns[1].headers.X-Token",
        "campaigns[1].headers.Host", "campaigns[2].buyer"])
    assert "  sellers[0].api_keys[0]: an API key must be at least 8 characters" in lines
    assert "  campaigns[0].ping_url: the port must be a number from 1 to 65535" in lines

