"""``pingpost ledger migrate --ledger URL``: create the ledger's schema or bring it up to date.

Opening a ledger migrates it too; this lets an operator do it ahead of a deploy, once, and
see the versions. For PostgreSQL only the database is migrated (no local journal is made).
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys

from .base import DEFAULT_URL, LedgerError, is_postgres, sqlite_path
from .migrations import migrate_postgres, migrate_sqlite
from .writer import connect


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    migrate = actions.add_parser("migrate", help="create or upgrade the ledger's schema")
    migrate.add_argument("--ledger", default=DEFAULT_URL,
                         help=f"sqlite:///PATH or postgresql://USER@HOST:PORT/DB (default: {DEFAULT_URL})")


def run(args: argparse.Namespace) -> int:
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
