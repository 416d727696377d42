"""``python -m bench.paired``: the documented name of :mod:`bench.report.paired`."""

import sys

from bench.report.paired import main

if __name__ == "__main__":
    sys.exit(main())
