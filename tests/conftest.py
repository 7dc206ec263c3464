"""Fixtures for every test, registered as plugins from the modules that define them."""

pytest_plugins = [
    "tests.support.buyers",
    "tests.support.exchange",
    "tests.support.clock",
    "tests.support.dashboard",
    "tests.helpers_raw",
    "tests.redis_support",
    "tests.support.ledgers",
]

import os  # noqa: E402

from tests.support.keys import KEY_ENV, TEST_KEY_TEXT  # noqa: E402

# Every pingpost process a test starts runs with the tests' operator key, as an operator's would.
os.environ[KEY_ENV] = TEST_KEY_TEXT
