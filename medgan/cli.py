"""``medgan`` command line: one subcommand per arrow of the data flow.

Each feature module owns its subcommand through ``add_cli(subparsers)``; the parser sets
``func`` to a callable taking the parsed ``argparse.Namespace`` and returning an exit code.
Every command is a thin wrapper over an importable function (its "Python twin").
"""

from __future__ import annotations

import argparse
import importlib
import sys

# module -> provides add_cli(subparsers). Order = order in --help.
COMMAND_MODULES = (
    "medgan.data.commands",   # medgan data phantom|prepare|info
    "medgan.train",           # medgan train
    "medgan.generate",        # medgan generate
    "medgan.metrics.commands",  # medgan fid
    "medgan.unet",            # medgan segment
    "medgan.sweep",           # medgan sweep
    "medgan.bench",           # medgan bench train|fid
)


class UserError(Exception):
    """An error caused by the user's input: printed as one line, exit code 2, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medgan", description=__doc__.splitlines()[0])
    parser.add_argument("--traceback", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_cli(sub)
    return parser


# Exceptions whose message is already a complete, user-facing sentence (file + problem).
def _user_errors() -> tuple[type[BaseException], ...]:
    from medgan.data.prepared import PreparedFormatError

    errors: list[type[BaseException]] = [UserError, PreparedFormatError, FileExistsError, FileNotFoundError, KeyError]
    try:
        from medgan.data.formats import RawFormatError

        errors.append(RawFormatError)
    except ImportError:
        pass
    try:
        from medgan.config import ConfigError

        errors.append(ConfigError)
    except ImportError:
        pass
    return tuple(errors)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except _user_errors() as e:
        if args.traceback:
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"medgan {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
