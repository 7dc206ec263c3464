"""Fixtures for every test, registered as plugins from the modules that define them."""

pytest_plugins = [
    "tests.support.buyers",
    "tests.support.exchange",
    "tests.support.clock",
    "tests.helpers_raw",
    "tests.redis_support",
]
