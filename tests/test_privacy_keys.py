"""Leads' personal data at rest: sealed under a key per lead, that key wrapped by the operator's.

Over both ledgers: what a sale writes holds no personal value in clear, reads back whole with
the key, does not open with another key or on another lead's row; books refuse a key other
than the one they were made with; a rotation re-wraps every key and leaves the data as it
was; books written in clear before encryption are sealed at open. From the command line:
``keygen``, ``serve`` without a key or with a bad one, ``ledger rotate-key``.
"""

from __future__ import annotations

import base64
import os
import sqlite3
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest

from pingpost import ledger
from pingpost.ledger import Ledger
from pingpost.privacy import keys
from pingpost.privacy.keys import KeyProblem, OperatorKey, Unreadable
from tests.helpers_process import run_cli, write_config
from tests.ledger_support import LEAD, UNDO_PRIVACY, ping, sold
from tests.pg_support import postgres_server, postgres_url  # noqa: F401
from tests.support.keys import KEY_ENV, TEST_KEY, TEST_KEY_TEXT
from tests.test_ledger import drained

OTHER_KEY_TEXT = keys.generate()
OTHER_KEY = OperatorKey(keys.parse(OTHER_KEY_TEXT, "a test"))
PERSONAL = [LEAD.email, LEAD.phone, LEAD.address, LEAD.first_name, LEAD.last_name]


async def sell(books: Ledger, ping_id: str) -> str:
    record = ping(ping_id)
    await books.record_ping(record)
    result = sold(record)
    await books.record_post(record, result, LEAD)
    await drained(books)
    assert result.lead_id is not None
    return result.lead_id


async def fetch(url: str, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows read past the ledger, as an operator's SQL would."""
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            return [tuple(row) for row in conn.execute(statement.replace("$1", "?").replace("$2", "?"), params)]
    conn = await asyncpg.connect(url)
    try:
        return [tuple(row) for row in await conn.fetch(statement, *params)]
    finally:
        await conn.close()


async def execute(url: str, *statements: str) -> None:
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            for statement in statements:
                conn.execute(statement)
        return
    conn = await asyncpg.connect(url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def clear(value: str | bytes | None) -> bytes:
    return b"" if value is None else bytes(value) if not isinstance(value, str) else value.encode()


async def test_a_sale_keeps_no_personal_value_in_clear_and_reads_back_whole(opened: Ledger, url: str) -> None:
    lead_id = await sell(opened, "p-1")
    ((wrapped, data, email_hash, phone_hash),) = await fetch(
        url, "SELECT key_wrapped, data, email_hash, phone_hash FROM lead_data WHERE lead_id = $1", lead_id)
    stored = clear(wrapped) + clear(data) + clear(email_hash) + clear(phone_hash)
    for value in PERSONAL:
        assert value.encode() not in stored
    assert wrapped is not None and email_hash is not None and phone_hash is not None
    assert await opened.get_lead(lead_id) == LEAD
    assert opened.vault is not None
    with pytest.raises(Unreadable):  # a lead's sealed data on another lead's row does not open
        opened.vault.operator.open("L-other", bytes(wrapped), bytes(data))
    with pytest.raises(Unreadable):
        OTHER_KEY.open(lead_id, bytes(wrapped), bytes(data))


async def test_books_refuse_another_operator_key(opened: Ledger, url: str, tmp_path: Path) -> None:
    await sell(opened, "p-1")
    with pytest.raises(KeyProblem, match="not the one the books"):
        await ledger.open(url, journal=tmp_path / "journal-2.db", key=OTHER_KEY)


async def test_a_rotation_rewraps_every_key_and_leaves_the_data(opened: Ledger, url: str, tmp_path: Path) -> None:
    lead_ids = [await sell(opened, f"p-{i}") for i in range(3)]
    before = dict(await fetch(url, "SELECT lead_id, data FROM lead_data"))
    assert await opened.rotate_key(TEST_KEY, OTHER_KEY) == 1 + len(lead_ids)  # the identifier key, then each lead's
    assert await opened.rotate_key(TEST_KEY, OTHER_KEY) == 0  # already under the new key: left alone
    await opened.close()
    assert dict(await fetch(url, "SELECT lead_id, data FROM lead_data")) == before
    with pytest.raises(KeyProblem):
        await ledger.open(url, journal=tmp_path / "journal-old.db", key=TEST_KEY)
    rotated = await ledger.open(url, journal=tmp_path / "journal-new.db", key=OTHER_KEY)
    try:
        assert [await rotated.get_lead(lead_id) for lead_id in lead_ids] == [LEAD] * 3
        # The identifier key outlived the rotation: the leads are still found by their keyed hashes.
        assert rotated.vault is not None
        email_hash, _ = rotated.vault.identifiers.of_lead(LEAD)
        assert len(await fetch(url, "SELECT lead_id FROM lead_data WHERE email_hash = $1", email_hash)) == 3
    finally:
        await rotated.close()


async def test_books_written_in_clear_are_sealed_at_open(opened: Ledger, url: str, tmp_path: Path) -> None:
    """Books from before encryption (schema version 5) kept the encoded lead in clear."""
    lead_id = await sell(opened, "p-1")
    await opened.close()
    plain = msgspec.msgpack.encode(LEAD)
    await execute(url, *UNDO_PRIVACY, "DELETE FROM schema_version WHERE version > 5")
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            conn.execute("UPDATE lead_data SET key_wrapped = NULL, data = ?", (plain,))
    else:
        conn = await asyncpg.connect(url)
        await conn.execute("UPDATE lead_data SET key_wrapped = NULL, data = $1", plain)
        await conn.close()
    books = await ledger.open(url, journal=tmp_path / "journal-2.db", key=TEST_KEY)
    try:
        ((wrapped, data),) = await fetch(url, "SELECT key_wrapped, data FROM lead_data")
        assert wrapped is not None and LEAD.email.encode() not in bytes(data)
        assert await books.get_lead(lead_id) == LEAD
    finally:
        await books.close()


async def test_the_journal_keeps_what_a_host_needs_to_start_while_postgresql_is_down(
        postgres_url: str, tmp_path: Path) -> None:  # noqa: F811
    journal = tmp_path / "journal.db"
    books = await ledger.open(postgres_url, journal=journal, key=TEST_KEY)
    await books.rotate_key(TEST_KEY, OTHER_KEY)  # the books' key is now one no host could derive
    await books.close()
    online = await ledger.open(postgres_url, journal=journal, key=OTHER_KEY)  # keeps its copy in the journal
    assert online.vault is not None
    hashes = online.vault.identifiers.of_lead(LEAD)
    await online.close()
    offline = await ledger.open("postgresql://pingpost@127.0.0.1:1/down", journal=journal, key=OTHER_KEY)
    try:
        assert offline.vault is not None and offline.vault.identifiers.of_lead(LEAD) == hashes
    finally:
        await offline.close()


# From the command line ------------------------------------------------------------------------


def without_key() -> dict[str, str]:
    env = dict(os.environ)
    env.pop(KEY_ENV, None)
    return env


async def test_keygen_prints_a_new_key_each_time() -> None:
    first, second = [await run_cli("keygen") for _ in range(2)]
    assert first[0] == second[0] == 0 and first[1] != second[1]
    assert len(base64.b64decode(first[1].strip(), validate=True)) == 32


@pytest.mark.parametrize("key, expected", [
    (None, "no operator key"),
    ("not base64!", "is not base64 text"),
    (base64.b64encode(b"short").decode(), "holds 5 bytes, not 32"),
], ids=["missing", "not_base64", "short"])
async def test_serve_refuses_to_start_without_a_usable_key(tmp_path: Path, key: str | None, expected: str) -> None:
    env = without_key()
    if key is not None:
        env[KEY_ENV] = key
    config = write_config(tmp_path, {"sellers": [{"id": "s", "api_keys": ["seller-key-1"]}]})
    code, _, err = await run_cli("serve", "--config", str(config), "--port", "0", "--ledger",
                             f"sqlite:///{tmp_path / 'books.db'}", env=env, cwd=tmp_path)
    assert code == 2 and expected in err and "pingpost keygen" in err
    assert not (tmp_path / "books.db").exists() or b"@" not in (tmp_path / "books.db").read_bytes()


async def test_serve_refuses_books_made_with_another_key(tmp_path: Path) -> None:
    path = tmp_path / "books.db"
    books = await ledger.open(f"sqlite:///{path}", key=TEST_KEY)
    await books.close()
    config = write_config(tmp_path, {"sellers": [{"id": "s", "api_keys": ["seller-key-1"]}]})
    env = without_key() | {KEY_ENV: OTHER_KEY_TEXT}
    code, _, err = await run_cli("serve", "--config", str(config), "--port", "0", "--ledger", f"sqlite:///{path}",
                             env=env, cwd=tmp_path)
    assert code == 2 and "is not the one the books" in err and "rotate-key" in err


async def test_serve_reads_the_key_file_of_the_config(tmp_path: Path) -> None:
    """No key in the environment: ``[privacy] key_file`` is read (a wrong path says so)."""
    config = write_config(tmp_path, {"sellers": [{"id": "s", "api_keys": ["seller-key-1"]}],
                                     "privacy": {"key_file": str(tmp_path / "missing.key")}})
    code, _, err = await run_cli("serve", "--config", str(config), "--port", "0", "--ledger",
                             f"sqlite:///{tmp_path / 'books.db'}", env=without_key(), cwd=tmp_path)
    assert code == 2 and "cannot read the key file" in err


async def test_rotate_key_from_the_command_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'books.db'}"
    books = await ledger.open(url, key=TEST_KEY)
    lead_id = await sell(books, "p-1")
    await books.close()
    (tmp_path / "new.key").write_text(OTHER_KEY_TEXT + "\n")
    code, out, err = await run_cli("ledger", "rotate-key", "--ledger", url, "--new-key-file", str(tmp_path / "new.key"),
                               env=without_key() | {KEY_ENV: TEST_KEY_TEXT})
    assert code == 0, err
    assert "re-wrapped 2 keys" in out and OTHER_KEY.id in out
    code, _, err = await run_cli("ledger", "rotate-key", "--ledger", url, "--new-key-file", str(tmp_path / "new.key"),
                             env=without_key() | {KEY_ENV: TEST_KEY_TEXT})
    assert code == 2 and "not the one the books" in err  # the old key no longer opens them
    rotated = await ledger.open(url, key=OTHER_KEY)
    try:
        assert await rotated.get_lead(lead_id) == LEAD
    finally:
        await rotated.close()
