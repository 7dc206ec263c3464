"""What privacy costs per ping and per lead: the opt-out check of a ping and of a post with a
million opt-outs held and with none, and sealing a lead with its keyed hashes.

Run: ``taskset -c 1 .venv/bin/pytest bench/test_bench_privacy.py --benchmark-only``
(results: docs/performance.md, "Privacy: the opt-out check and sealing a lead").
"""

from __future__ import annotations

import hashlib
import os

import msgspec
import pytest

from pingpost.privacy.identifiers import Identifiers
from pingpost.privacy.suppression import Suppression
from pingpost.privacy.vault import Vault, first_identifier_key
from pingpost.schema import Lead, PingFields
from tests.support.keys import TEST_KEY

MILLION = 1_000_000
LEAD = Lead(first_name="Ada", last_name="Lovelace", email="ada@example.com", phone="4155550134", zip="90210",
            state="CA", address="1 Main St", city="Beverly Hills", ip_address="192.0.2.7", attributes={"age": 40})
#: A ping as 70% of the simulator's carry: both hashes, of a consumer who did not opt out.
PING = PingFields(vertical="auto", zip="90210", state="CA", email_sha256=hashlib.sha256(b"ada@example.com").hexdigest(),
                  phone_sha256=hashlib.sha256(b"4155550134").hexdigest())
IDENTIFIERS = Identifiers(TEST_KEY.derive(b"bench identifier key"))


@pytest.fixture(scope="module")
def million() -> Suppression:
    view = Suppression(IDENTIFIERS)
    view.add(os.urandom(16) for _ in range(MILLION))
    assert len(view) == MILLION
    return view


@pytest.mark.parametrize("held", ["none", "million"])
def test_ping_check(benchmark, held: str, request: pytest.FixtureRequest) -> None:
    """The ping path's check: with none held, one truth test; with a million, the ping's
    two keyed hashes and two set lookups."""
    benchmark.group = "opt-out check of a ping"
    view = Suppression(IDENTIFIERS) if held == "none" else request.getfixturevalue("million")
    assert benchmark(view.ping_opted_out, PING) is False


@pytest.mark.parametrize("held", ["none", "million"])
def test_post_check(benchmark, held: str, request: pytest.FixtureRequest) -> None:
    benchmark.group = "opt-out check of a post"
    view = Suppression(IDENTIFIERS) if held == "none" else request.getfixturevalue("million")
    view.loaded = True
    assert benchmark(view.refuse, LEAD) is None


def test_seal(benchmark) -> None:
    """``OperatorKey.seal``: a fresh key, the lead's data under it, the key wrapped."""
    benchmark.group = "sealing a lead"
    data = msgspec.msgpack.encode(LEAD)
    wrapped, sealed = benchmark(TEST_KEY.seal, "a" * 24, data)
    assert TEST_KEY.open("a" * 24, wrapped, sealed) == data


def test_keyed_hashes(benchmark) -> None:
    """``Identifiers.of_lead``: the email's and the phone's keyed hashes."""
    benchmark.group = "sealing a lead"
    assert len(benchmark(IDENTIFIERS.of_lead, LEAD)) == 2


def test_vault_seal(benchmark) -> None:
    """What a sale's lead data row costs in all: encoded, sealed, and its two hashes."""
    benchmark.group = "sealing a lead"
    vault = Vault(TEST_KEY, first_identifier_key(TEST_KEY))
    wrapped, sealed, email_hash, phone_hash = benchmark(vault.seal, "a" * 24, LEAD)
    assert vault.open("a" * 24, wrapped, sealed) == LEAD
