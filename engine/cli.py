"""The ``pingpost`` command: ``serve``, ``check``, ``buyers``, ``demo``, ``bench``, ``ledger``, ``passwd``,
``keygen``.

Each subcommand lives in its own module, which contributes ``add_arguments(parser)`` and
``run(args) -> int``; this file only wires them together, importing just the module of
the command being run (so ``serve`` does not pay for the demo's imports).
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: subcommand -> (module, one-line help)
COMMANDS = {
    "serve": ("pingpost.serve", "run the exchange"),
    "check": ("pingpost.check", "check a config file and print every error, without starting anything"),
    "buyers": ("pingpost.sim.buyers", "run simulated buyers (many campaigns on one port)"),
    "demo": ("pingpost.demo", "exchange + simulated buyers + seller traffic, with a live summary"),
    "bench": ("pingpost.benchmark", "measure throughput and latency against simulated buyers (docs/performance.md)"),
    "ledger": ("pingpost.ledger.command", "the exchange's books: create or upgrade the schema, rotate the key"),
    "passwd": ("pingpost.passwd", "read a password from stdin and print its argon2id hash, for [[users]]"),
    "keygen": ("pingpost.privacy.keygen", "print a new operator key, which seals leads' personal data"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    parser = argparse.ArgumentParser(prog="pingpost", description="A ping-post lead exchange.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text)
        if name == chosen:
            module = importlib.import_module(module_name)
            command.description = module.__doc__
            command.formatter_class = argparse.RawDescriptionHelpFormatter
            command.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                                 help="log verbosity (default: %(default)s)")
            module.add_arguments(command)
            command.set_defaults(run=module.run)
    args = parser.parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
