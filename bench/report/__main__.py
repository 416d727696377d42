import sys

from bench.report.tables import main

sys.exit(main())
