"""``python -m bench.compare``: the documented name of :mod:`bench.report.compare`."""

import sys

from bench.report.compare import main

if __name__ == "__main__":
    sys.exit(main())
