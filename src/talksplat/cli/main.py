"""The ``talksplat`` console script."""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from talksplat import __version__
from talksplat.errors import TalksplatError, UsageError

USAGE_EXIT = 2     # the command line is wrong (argparse's code too): fix the command
RUNTIME_EXIT = 1   # the command was fine but failed: fix the data, the disk, the checkpoint

# Subcommand modules, each exposing register(subparsers) that sets ``func`` on its parser.
SUBCOMMANDS = ("talksplat.cli.doctor", "talksplat.cli.demo", "talksplat.cli.synth", "talksplat.cli.sync",
               "talksplat.cli.prepare", "talksplat.cli.recipes", "talksplat.cli.train", "talksplat.cli.render",
               "talksplat.cli.eval", "talksplat.cli.serve", "talksplat.cli.export",
               "talksplat.cli.pretrain", "talksplat.cli.oneshot")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: argparse's usage block before the message made every bad option
    several lines on stderr, unlike the command's own errors. Subparsers inherit the class."""

    def error(self, message: str):
        self.exit(USAGE_EXIT, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="talksplat", description=__doc__)
    parser.add_argument("--version", action="version", version=f"talksplat {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in SUBCOMMANDS:
        importlib.import_module(module_name).register(subparsers)
    return parser


def _one_line_warning(command: str):
    """A ``warnings.showwarning`` printing one line (``talksplat CMD: warning: ...``): Python's default
    adds the source file and echoes the source line, two lines of noise for a user."""
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"talksplat {command}: warning: {message}", file=file or sys.stderr)
    return show


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        if exc.code == USAGE_EXIT:      # a bad option, already reported: a code to return, as for UsageError
            return USAGE_EXIT
        raise                           # --help, --version: argparse's own exit
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        with warnings.catch_warnings():     # restores Python's display when main() returns (tests call it)
            warnings.showwarning = _one_line_warning(args.command)
            return int(args.func(args) or 0)
    except TalksplatError as exc:
        print(f"talksplat {args.command}: error: {exc}", file=sys.stderr)
        return USAGE_EXIT if isinstance(exc, UsageError) else RUNTIME_EXIT
    except KeyboardInterrupt:
        print(f"talksplat {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into e.g. `head` that exited early: not an error worth a traceback.
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
