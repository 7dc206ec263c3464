"""The operator key the tests' exchanges and books run with.

Set in the environment as the suite starts (``tests/conftest.py``), so every ``pingpost``
process a test starts finds it as an operator's would; a test of a missing or wrong key
takes it out of the environment it passes on.
"""

from __future__ import annotations

from pingpost.privacy.keys import KEY_ENV, OperatorKey, parse

TEST_KEY_TEXT = "dGVzdHMgb2YgcGluZ3Bvc3Q6IG5ldmVyIGEga2V5ISE="  # 32 bytes: tests of pingpost: never a key!!
TEST_KEY = OperatorKey(parse(TEST_KEY_TEXT, "the tests' key"))

__all__ = ["KEY_ENV", "TEST_KEY", "TEST_KEY_TEXT"]
