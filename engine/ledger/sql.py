"""The statements both backends run, written once with ``?`` placeholders.

PostgreSQL numbers its placeholders (``numbered``); everything else is the same SQL, which
keeps what a row means identical in both. Inserts are idempotent on each table's key
(``ON CONFLICT DO NOTHING``, not ``INSERT OR IGNORE``, which would also swallow a NOT NULL
violation): resending an entry after a crash writes nothing twice.
"""

from __future__ import annotations

import itertools
import re

from .codec import KEYS, TABLES

#: Rows retention deletes per transaction, so a large purge never holds the writer for long.
DROP_CHUNK = 5000


def insert(table: str) -> str:
    columns = TABLES[table]
    return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
            "ON CONFLICT DO NOTHING")


def select(table: str) -> str:
    return f"SELECT {', '.join(TABLES[table])} FROM {table} WHERE {KEYS[table]} = ?"


def live_sales(campaigns: str = "") -> str:
    """Live (non-test) sales rows since the day start, what ``base.tally_sales`` counts into
    the stores' cap units. Parameters: day start, then whatever ``campaigns`` filters on."""
    return f"SELECT {', '.join(TABLES['sales'])} FROM sales WHERE NOT test AND sold_at >= ? {campaigns}"


#: Retention, one chunk at a time; parameter: the cutoff. A ping or post with a sale stays.
DROP_PINGS = ("DELETE FROM pings WHERE ping_id IN (SELECT ping_id FROM pings p WHERE created_at < ? "
              f"AND NOT EXISTS (SELECT 1 FROM sales s WHERE s.ping_id = p.ping_id) LIMIT {DROP_CHUNK})")
DROP_POSTS = ("DELETE FROM posts WHERE ping_id IN (SELECT ping_id FROM posts p WHERE posted_at < ? "
              f"AND NOT EXISTS (SELECT 1 FROM sales s WHERE s.ping_id = p.ping_id) LIMIT {DROP_CHUNK})")


def counted_only(drop: str, table: str, marks: str) -> str:
    """A retention statement that drops only rows the counters have counted (SQLite: rowids at
    or below the table's mark)."""
    return drop.replace(" LIMIT ", f" AND p.rowid <= (SELECT counted_through FROM {marks} WHERE name = '{table}') "
                                   "LIMIT ")


def numbered(statement: str) -> str:
    """``?`` placeholders as PostgreSQL's ``$1, $2, ...``."""
    counter = itertools.count(1)
    return re.sub(r"\?", lambda _: f"${next(counter)}", statement)
