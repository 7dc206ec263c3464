"""What the tests stand on: real buyer servers, a real exchange, a clock the test moves.

Each module holds helpers and the fixtures built on them; tests/conftest.py registers
the fixture modules as pytest plugins, so a test module asks for a fixture by name and
imports only the helpers it calls.
"""
