"""The ``talksplat`` console script."""

from __future__ import annotations

import argparse
import importlib
import sys

from talksplat import __version__
from talksplat.errors import TalksplatError

# Subcommand modules, each exposing register(subparsers) that sets ``func`` on its parser.
SUBCOMMANDS = ("talksplat.cli.doctor", "talksplat.cli.demo", "talksplat.cli.synth", "talksplat.cli.sync",
               "talksplat.cli.prepare", "talksplat.cli.recipes", "talksplat.cli.train", "talksplat.cli.render",
               "talksplat.cli.eval", "talksplat.cli.serve", "talksplat.cli.export")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="talksplat", description=__doc__)
    parser.add_argument("--version", action="version", version=f"talksplat {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in SUBCOMMANDS:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except TalksplatError as exc:
        print(f"talksplat {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"talksplat {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into e.g. `head` that exited early: not an error worth a traceback.
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
