"""``python -m bench.export``: the documented name of :mod:`bench.harness.export`."""

import sys

from bench.harness.export import main

if __name__ == "__main__":
    sys.exit(main())
