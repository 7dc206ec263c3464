"""``pingpost keygen``: print a new operator key (the base64 text of 32 random bytes).

Keep it out of the config file and out of version control: pass it as ``PINGPOST_DATA_KEY``,
or point ``[privacy] key_file`` at a file only the exchange's user can read, e.g.
``pingpost keygen > pingpost.key && chmod 600 pingpost.key``. Losing it loses every lead's
personal data in the books (the money and traffic records do not need it).
"""

from __future__ import annotations

import argparse

from .keys import generate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    return None


def run(args: argparse.Namespace) -> int:
    print(generate())
    return 0
