"""``pingpost passwd``: read a password from stdin, print its argon2id hash.

The hash goes in a ``[[users]]`` entry's ``password_hash``; the password itself is never
written anywhere. From a terminal the password is asked twice without echo; otherwise the
first line of stdin is the password (its line ending dropped, nothing else), so
``printf '%s' "$PW" | pingpost passwd`` works in scripts.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from argon2 import PasswordHasher


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options: argon2-cffi's defaults (RFC 9106's second recommended set: t=3, 64 MiB, p=4)."""


def run(args: argparse.Namespace) -> int:
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("pingpost: the passwords differ", file=sys.stderr)
            return 2
    else:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    if not password:
        print("pingpost: an empty password is not a password", file=sys.stderr)
        return 2
    print(PasswordHasher().hash(password))
    return 0
