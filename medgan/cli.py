"""medgan: GANs for medical image synthesis — one subcommand per arrow of the data flow (nothing imports this module).

Each feature owns its subcommand through ``add_cli(subparsers)``; the parser sets ``func`` to a callable
taking the parsed ``argparse.Namespace`` and returning an exit code. Every command is a thin wrapper over
an importable function (its "Python twin").

Errors: a ``medgan.errors.UserError`` (bad input: a missing folder, an unknown knob, a broken file) is
printed as one line and exits 2. Anything else is a bug in medgan and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys

from medgan import bench, export, generate, sweep, turing
from medgan.beyond import recon
from medgan.classify import commands as classify_commands
from medgan.data import commands as data_commands
from medgan.errors import UserError
from medgan.metrics import commands as metric_commands
from medgan.segmentation import commands as segment_commands
from medgan.training import commands as train_commands

# Order = order in --help.
COMMANDS = (
    data_commands,     # medgan data phantom|prepare|info
    train_commands,    # medgan train
    generate,          # medgan generate
    export,            # medgan export
    metric_commands,   # medgan fid
    segment_commands,  # medgan segment
    classify_commands,  # medgan classify
    recon,             # medgan recon (pix2pix / L1 U-Net reconstruction from undersampled k-space)
    sweep,             # medgan sweep
    bench,             # medgan bench train|fid
    turing,            # medgan turing deck|score
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medgan", description=__doc__.splitlines()[0])
    parser.add_argument("--traceback", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in COMMANDS:
        module.add_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        if args.traceback:
            raise
        print(f"medgan {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
