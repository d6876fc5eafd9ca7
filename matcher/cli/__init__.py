"""The ``icd`` command line, one module per subcommand (argparse lives only here). Entry point: :func:`main`."""
from __future__ import annotations

from matcher.cli.main import COMMANDS, build_parser, main

__all__ = ["COMMANDS", "build_parser", "main"]
