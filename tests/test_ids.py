"""Ids drawn from the pooled CSPRNG bytes: well-formed, never repeated, not shared with a fork."""

from __future__ import annotations

import os
import re
import time

from pingpost import ids


def test_tokens_are_hex_and_distinct_across_refills() -> None:
    drawn = [ids.token() for _ in range(3 * ids.POOL // ids.SIZE + 7)]  # past three refills
    assert all(re.fullmatch(r"[0-9a-f]{24}", t) for t in drawn)
    assert len(set(drawn)) == len(drawn)


def test_ordered_ids_are_a_time_then_a_token_and_sort_as_they_were_made() -> None:
    before = time.time_ns() // 1_000_000
    drawn = [ids.ordered() for _ in range(2_000)]
    after = time.time_ns() // 1_000_000
    assert all(re.fullmatch(r"[0-9a-f]{36}", t) for t in drawn)
    assert len(set(drawn)) == len(drawn)
    assert all(before <= int(t[:12], 16) <= after for t in drawn)
    stamps = [t[:12] for t in drawn]
    assert stamps == sorted(stamps)


def test_a_forked_child_does_not_hand_out_its_parents_next_ids() -> None:
    ids.token()  # the pool holds bytes the parent has not used yet
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        os.write(write, " ".join(ids.token() for _ in range(5)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split())
    os.waitpid(pid, 0)
    parent = {ids.token() for _ in range(5)}
    assert len(child) == 5 and not child & parent
