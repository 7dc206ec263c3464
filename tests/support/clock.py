"""A clock the test moves: what the stores and the auction read as the time of day.

Production passes ``time.time``; a test passes a ``ManualClock`` and calls ``advance`` where it
would otherwise sleep past an expiry, so the test takes no wall time and the expiry is
exact. It starts at the real time, so records and answers carry plausible dates.
"""

from __future__ import annotations

import time

import pytest


class ManualClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()
