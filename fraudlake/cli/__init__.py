"""The ``fraudlake`` command line: one package that parses, calls the layers and the
orchestration, and prints. Nothing outside this package imports it."""

from fraudlake.cli.common import context_from
from fraudlake.cli.main import build_parser, main

__all__ = ["build_parser", "context_from", "main"]
