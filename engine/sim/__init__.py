"""Stand-ins for the exchange's outside world: simulated buyers and seller traffic.

They speak only the contract's HTTP (docs/simulator.md), so ``demo``, ``bench`` and the
tests exercise the exchange exactly as real buyers and sellers would.
"""
