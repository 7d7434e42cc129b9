"""The ``onevision`` command line: each command parses its arguments and calls the package that does the job.
May import every other package."""

from .main import main

__all__ = ["main"]
