"""Privacy operations: a lead's personal data encrypted at rest under a key of its own, the
consumers who opted out kept as keyed hashes, deletions that destroy a lead's key.

``keys``: the operator's key and the per-lead keys it wraps; ``identifiers``: the keyed
hashes an email or phone is known by once it must not be kept itself.
"""
