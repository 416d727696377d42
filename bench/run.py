"""``python -m bench.run``: the documented name of :mod:`bench.harness.run`."""

import sys

from bench.harness.run import main

if __name__ == "__main__":
    sys.exit(main())
