"""``python -m onevision_encoder``: the ``onevision`` command line."""

import sys

from .cli import main

sys.exit(main())
