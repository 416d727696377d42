import sys

from bench.harness.run import main

sys.exit(main())
