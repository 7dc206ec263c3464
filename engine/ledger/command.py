"""``pingpost ledger migrate --ledger URL``: create the ledger's schema or bring it up to date.
``pingpost ledger rotate-key --new-key-file FILE``: re-wrap every key the books keep under a new
operator key.

Opening a ledger migrates it too; ``migrate`` lets an operator do it ahead of a deploy, once,
and see the versions. For PostgreSQL only the database is migrated (no local journal is made).

A rotation runs with the exchange stopped: a worker still sealing under the old key would
write leads the new key does not open. With PostgreSQL the host's journal is forwarded first
(a lead waiting there was sealed under the old key); run it on each host, or once and again
after the other hosts' journals are empty: keys already under the new key are left alone.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys

from ..privacy import keys
from .base import DEFAULT_URL, LedgerError, LedgerUnavailable, is_postgres, sqlite_path
from .migrations import migrate_postgres, migrate_sqlite
from .writer import connect


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    migrate = actions.add_parser("migrate", help="create or upgrade the ledger's schema")
    rotate = actions.add_parser("rotate-key", help="re-wrap every lead's key under a new operator key "
                                                   "(the sealed data is not touched)")
    for action in (migrate, rotate):
        action.add_argument("--ledger", default=DEFAULT_URL,
                            help=f"sqlite:///PATH or postgresql://USER@HOST:PORT/DB (default: {DEFAULT_URL})")
    rotate.add_argument("--ledger-journal", default=None,
                        help="with a postgresql:// ledger: this host's journal file (default: pingpost-ledger-journal.db)")
    rotate.add_argument("--key-file", default=None, help=f"the current key's file (default: ${keys.KEY_ENV})")
    rotate.add_argument("--new-key-file", required=True, help="the new key's file (from `pingpost keygen`)")


def run(args: argparse.Namespace) -> int:
    if args.action == "rotate-key":
        return asyncio.run(rotate_key(args))
    try:
        before, after = asyncio.run(migrate(args.ledger))
    except (LedgerError, OSError, sqlite3.Error) as exc:
        print(f"pingpost: cannot migrate the ledger: {exc}", file=sys.stderr)
        return 1
    print(f"ledger schema version {before} -> {after}" if before != after else f"ledger schema at version {after}")
    return 0


async def migrate(url: str) -> tuple[int, int]:
    """(version before, version after) of the ledger at ``url``."""
    path = sqlite_path(url)
    if path is not None:
        def on_file() -> tuple[int, int]:
            conn = connect(path)
            try:
                return migrate_sqlite(conn)
            finally:
                conn.close()
        return await asyncio.to_thread(on_file)
    if is_postgres(url):
        import asyncpg

        from .postgres import CONNECT_TIMEOUT_S, redacted
        try:
            conn = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT_S)
        except (asyncpg.PostgresError, OSError, TimeoutError) as exc:
            raise LedgerError(f"{redacted(url)}: {exc}") from None
        try:
            return await migrate_postgres(conn)
        finally:
            await conn.close()
    raise LedgerError(f"not a ledger URL to migrate: {url!r} (sqlite:///PATH or postgresql://USER@HOST:PORT/DB)")


async def rotate_key(args: argparse.Namespace) -> int:
    from . import open as open_ledger
    try:
        old = keys.required(keys.load(args.key_file))
        new = keys.required(keys.load(args.new_key_file, environ={}))
    except keys.KeyProblem as exc:
        print(f"pingpost: {exc}", file=sys.stderr)
        return 2
    if old.id == new.id:
        print("pingpost: the new key is the current key", file=sys.stderr)
        return 2
    try:
        books = await open_ledger(args.ledger, journal=args.ledger_journal, key=old)
        try:
            if books.backlog():
                await books.close()  # forwards what it can first
                books = await open_ledger(args.ledger, journal=args.ledger_journal, key=old)
                if books.backlog():
                    raise LedgerUnavailable(f"{books.backlog()} records are still in this host's journal")
            rewrapped = await books.rotate_key(old, new)
        finally:
            await books.close()
    except keys.KeyProblem as exc:
        print(f"pingpost: {exc}", file=sys.stderr)
        return 2
    except LedgerError as exc:
        print(f"pingpost: cannot rotate the key: {exc}", file=sys.stderr)
        return 1
    print(f"re-wrapped {rewrapped} keys under the new key {new.id}; start the exchange with it")
    return 0
