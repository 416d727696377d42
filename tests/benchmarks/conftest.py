import json
import os

import pytest

RATIOS: dict = {}


@pytest.fixture(scope="session")
def ratios():
    """Per-session store of benchmark minima (seconds) so ratios come from one run."""
    yield RATIOS
    if RATIOS:
        path = os.path.join(os.path.dirname(__file__), "..", "..", ".benchmarks")
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "last_minima.json"), "w") as f:
            json.dump(RATIOS, f, indent=1)
