"""``env:NAME`` in the config: API keys, test keys and buyer header values read from the
environment at load, so the file need not hold them; a variable that cannot be read is an
error with its path, and no error ever prints a secret."""

from __future__ import annotations

import copy

import pytest

from pingpost.config import ConfigError, from_dict
from tests.helpers_process import run_cli, write_config
from tests.support.buyers import bid
from tests.support.exchange import PING, base_config

LIVE, TEST, TOKEN = "acme-live-from-env-7f3a", "acme-test-from-env-7f3a", "buyer-token-from-env-7f3a"


def secret_config(buyers, headers: dict[str, str]) -> dict:
    config = base_config(buyers, {"id": "c1", "headers": headers})
    config["sellers"][0].update(api_keys=["env:PP_ACME_KEY"], test_api_keys=["env:PP_ACME_TEST_KEY"])
    return config


async def test_keys_and_header_values_come_from_the_environment(buyers, exchange, monkeypatch):
    monkeypatch.setenv("PP_ACME_KEY", LIVE)
    monkeypatch.setenv("PP_ACME_TEST_KEY", TEST)
    monkeypatch.setenv("PP_BUYER_TOKEN", TOKEN)
    buyers.script("c1", ping=bid(2.0))
    ex = await exchange(secret_config(buyers, {"X-Buyer-Token": "env:PP_BUYER_TOKEN", "X-Plain": "as written"}))

    status, answer = await ex.ping(PING, key=LIVE)
    assert status == 200 and answer["price"] == 2.0
    status, _ = await ex.ping(PING, key=TEST)
    assert status == 200
    assert [p.body["test"] for p in buyers.pings["c1"]] == [False, True]
    assert all(p.headers["X-Buyer-Token"] == TOKEN and p.headers["X-Plain"] == "as written"
               for p in buyers.pings["c1"])
    assert (await ex.ping(PING, key="env:PP_ACME_KEY"))[0] == 401


def test_the_document_itself_is_not_changed(buyers, monkeypatch):
    monkeypatch.setenv("PP_ACME_KEY", LIVE)
    monkeypatch.setenv("PP_ACME_TEST_KEY", TEST)
    monkeypatch.setenv("PP_BUYER_TOKEN", TOKEN)
    raw = secret_config(buyers, {"X-Buyer-Token": "env:PP_BUYER_TOKEN"})
    kept = copy.deepcopy(raw)
    config = from_dict(raw)
    assert raw == kept
    assert config.sellers[0].api_keys == [LIVE] and config.campaigns[0].headers == {"X-Buyer-Token": TOKEN}


def test_a_variable_that_cannot_be_read_is_an_error_at_its_path(buyers, monkeypatch):
    """Not set, empty, or not a variable name: one error each, and no other error at that
    path (an unread key is not also "too short")."""
    monkeypatch.delenv("PP_ACME_KEY", raising=False)
    monkeypatch.setenv("PP_ACME_TEST_KEY", "")
    with pytest.raises(ConfigError) as caught:
        from_dict(secret_config(buyers, {"X-Buyer-Token": "env:not-a-name"}))
    assert caught.value.errors == [
        ("sellers[0].api_keys[0]", "environment variable PP_ACME_KEY is not set"),
        ("sellers[0].test_api_keys[0]", "environment variable PP_ACME_TEST_KEY is empty"),
        ("campaigns[0].headers.X-Buyer-Token",
         "env: needs an environment variable name (letters, digits, _), not 'not-a-name'"),
    ]


async def test_a_secret_that_fails_a_check_is_never_printed(buyers, tmp_path, monkeypatch):
    """A key too short, a key used twice, a header value with a line break: each is refused
    at its path, and neither the message nor anything else ``serve`` prints shows the value."""
    short, shared, injecting = "k3y", "shared-secret-9b1c", "tok-5e2d\r\nX-Injected: 1"
    monkeypatch.setenv("PP_ACME_KEY", short)
    monkeypatch.setenv("PP_ACME_TEST_KEY", shared)
    monkeypatch.setenv("PP_OTHER_KEY", shared)
    monkeypatch.setenv("PP_BUYER_TOKEN", injecting)
    config = secret_config(buyers, {"X-Buyer-Token": "env:PP_BUYER_TOKEN"})
    config["sellers"][1]["api_keys"] = ["env:PP_OTHER_KEY"]
    code, out, err = await run_cli("serve", "--config", str(write_config(tmp_path, config)), "--port", "0")
    assert code == 2 and out == ""
    assert "sellers[0].api_keys[0]: an API key must be at least 8 characters" in err
    assert "sellers[1].api_keys[0]: key already used at sellers[0].test_api_keys[0]" in err
    assert "campaigns[0].headers.X-Buyer-Token: a header value may hold only" in err
    for secret in (short, shared, "tok-5e2d", "X-Injected"):
        assert secret not in err
