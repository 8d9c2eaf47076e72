"""`python -m tuneloop`: the `tuneloop` command, for environments without its console script on PATH."""

import sys

from tuneloop.cli import main

sys.exit(main())
