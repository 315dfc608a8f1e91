"""`python -m runsvc`: parse the command line, then hand over to runsvc.cli."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
