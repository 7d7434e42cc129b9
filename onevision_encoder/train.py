"""``torchrun --nproc_per_node N -m onevision_encoder.train --config FILE --out DIR`` (also ``onevision train``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .cli.main import run_command
from .cli.train_cmd import add_arguments, run


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m onevision_encoder.train", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    add_arguments(parser)
    return run_command(run, parser.parse_args(argv), parser.prog)


if __name__ == "__main__":
    sys.exit(main())
