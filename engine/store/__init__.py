"""Shared state of the exchange; ``base.Store`` is the interface, one module per backend."""
