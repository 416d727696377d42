"""``python -m bench.score``: the documented name of :mod:`bench.harness.score`."""

import sys

from bench.harness.score import main

if __name__ == "__main__":
    sys.exit(main())
