"""``python -m highmodal`` (and ``torchrun -m highmodal``): the command line."""

import sys

from highmodal.cli import main

if __name__ == "__main__":  # not when a spawned worker re-imports the main module
    sys.exit(main())
