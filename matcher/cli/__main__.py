"""``python -m matcher.cli ...``: the same as the ``icd`` command."""
import sys

from matcher.cli.main import main

sys.exit(main())
