"""Which CPUs each process of a run may use (``--cpus``), applied with ``taskset``: the
exchange on a core of its own, so its CPU figures are its own and not the load's.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass


@dataclass(frozen=True)
class Layout:
    exchange: str | None  #: taskset CPU list of the exchange (None: not pinned)
    others: str | None    #: buyers, redis-server and this process

    @classmethod
    def of(cls, spec: str) -> Layout:
        if spec == "none" or shutil.which("taskset") is None:
            return cls(None, None)
        if spec == "auto":
            cpus = sorted(os.sched_getaffinity(0))
            if len(cpus) >= 2:
                return cls(str(cpus[0]), ",".join(map(str, cpus[1:])))
            return cls(str(cpus[0]), str(cpus[0]))
        exchange, sep, others = spec.partition("/")
        if not sep or not exchange or not others:
            raise ValueError("expected EXCHANGE/OTHERS CPU lists, e.g. 0/1, 'auto' or 'none'")
        for part in (exchange, others):
            _cpu_set(part)
        return cls(exchange, others)

    def describe(self) -> str:
        if self.exchange is None:
            return "processes not pinned (no taskset, or --cpus none): figures mix everyone's CPU"
        if self.exchange == self.others:
            return f"one core: exchange, buyers and load generator all on CPU {self.exchange} (figures are pessimistic)"
        return f"exchange on CPU {self.exchange}; simulated buyers, redis and the load generator on CPU {self.others}"

    def prefix(self, which: str) -> list[str]:
        cpus = self.exchange if which == "exchange" else self.others
        return [] if cpus is None else ["taskset", "-c", cpus]

    def pin_self(self) -> None:
        if self.others is not None:
            os.sched_setaffinity(0, _cpu_set(self.others))


def _cpu_set(spec: str) -> set[int]:
    cpus: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise ValueError(f"not a CPU list: {spec!r}")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus
