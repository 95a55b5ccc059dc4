"""``python -m nksim``: the same command line as the ``nksim`` console script (:func:`nksim.cli.main`)."""
import sys

from nksim.cli import main

if __name__ == "__main__":
    sys.exit(main())
