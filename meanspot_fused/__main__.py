"""``python -m meanspot_fused``: the command line of :mod:`meanspot_fused.cli`."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
