"""Buyer formats: how a campaign's requests are made and its answers read.

A format is a pair of pure functions per message, one that makes the request (a head and
a body) and one that reads the answer into a typed result, in the manner of Prebid
Server's bidder adapters. ``pingpost`` is the exchange's own protocol, the default and the
hot path; ``custom`` formats describe a buyer's own API in the config (``spec``) and are
compiled once per config (``stage``, ``request``, ``answer``) into objects that render and
read without looking at the config again. The I/O around them (deadlines, cancellation,
retries, metrics) stays in ``buyers.BuyerClient``; nothing here sends a byte.

Nothing is imported here: ``config`` imports ``spec`` and ``stage`` while ``campaign``
imports the config's types, so each module is imported by its own name.
"""
