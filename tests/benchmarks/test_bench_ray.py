"""Harness overhead: the same units in-process, through Ray with 1 CPU worker, and with 2.
Reported, not asserted beyond completing: Ray's start-up (~seconds) dominates tiny runs. Ray runs
with token authentication, as every bench.harness.run does (bench/harness/cluster.py)."""

import itertools

import pytest

from bench.harness.run import main

ARGS = [
    "--masks",
    "centre,left",
    "--methods",
    "si,telea,mean",
    "--n-images",
    "4",
    "--shard-size",
    "1",
    "--iters",
    "30",
    "--candidates",
    "8",
    "--no-progress",
]
_count = itertools.count()


@pytest.mark.parametrize("workers", [0, 1, 2])
@pytest.mark.benchmark(group="harness")
def test_harness(benchmark, workers, tmp_path, ratios):
    def once():
        return main(ARGS + ["--workers", str(workers), "--out", str(tmp_path / f"r{next(_count)}")])

    assert benchmark.pedantic(once, rounds=1, warmup_rounds=0) == 0
    ratios[f"harness_workers_{workers}"] = benchmark.stats.stats.min
