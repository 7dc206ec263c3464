"""Check a config file without starting anything: ``pingpost check --config FILE``.

It runs every check ``serve`` (and a reload) runs and builds what they build from the
file: the targeting index, the buyer request heads, the store's numbering; nothing
listens, no store is opened and no buyer is called. ``env:NAME`` secrets are read from
this command's environment, so run it with the environment ``serve`` gets.

Exit 0 with a one-line summary on a good file; 2 with every error and its path on stderr
on a bad one (the lines ``serve`` prints).
"""

from __future__ import annotations

import argparse
import sys

from .auction import prepare
from .config import ConfigError, load, report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="TOML or JSON config file")


def run(args: argparse.Namespace) -> int:
    try:
        config = load(args.config)
    except ConfigError as exc:
        print(report(args.config, exc), file=sys.stderr)
        return 2
    prepare(config)
    active = sum(c.active for c in config.campaigns)
    print(f"OK: {args.config}: sellers {len(config.sellers)}, buyers {len(config.buyers)}, "
          f"campaigns {len(config.campaigns)} ({active} active)")
    return 0
