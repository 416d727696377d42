"""``python -m bench.run``: every method x mask x image, fanned out with Ray, into one run dir.

python -m bench.run --masks all --preset quick                 # make run (CPU workers)
python -m bench.run --masks all --preset paper --gpus 4        # the thesis's experiment
python -m bench.run --data celeba:/data/img_align_celeba --preset paper --gpus 4
python -m bench.run --resume --out results/runs/2026-11-27T12-00-00

The pieces: :mod:`bench.cli` (flags, validation), :mod:`bench.rundir` (the run directory),
:mod:`bench.workers` (units, the worker), :mod:`bench.execute` (in-process or Ray),
:mod:`bench.report` (tables and figures).
"""

from __future__ import annotations

import sys
from typing import Optional

from bench.cli import UsageError, build_config, build_parser
from bench.execute import execute
from bench.report import build_report
from bench.rundir import check_existing_run, done_units, log, merge_records, prepare_run_dir, setup_logging
from bench.workers import plan_units, resolve_inputs
from facefill_core.config import BenchConfig

__all__ = ["UsageError", "build_config", "build_parser", "main", "run"]


def run(cfg: BenchConfig, resume: bool = False, progress: bool = True, verbose: bool = False) -> str:
    """Run (or, with ``resume``, finish) ``cfg`` into ``cfg.out``; returns the run directory.
    The dataset, its face box and the targets' landmarks are resolved here, once."""
    check_existing_run(cfg, resume)  # before any work
    inputs = resolve_inputs(cfg)
    prepare_run_dir(cfg, resume, inputs.test_set.metadata)
    setup_logging(cfg.out, verbose)
    units = plan_units(cfg)
    done = done_units(cfg.out) if resume else set()
    todo = [u for u in units if u.uid not in done]
    log.info("run %s: %d units, %d already done", cfg.out, len(units), len(units) - len(todo))
    if todo:
        execute(cfg, todo, inputs, progress, verbose)
    merge_records(cfg.out)
    build_report(cfg.out)
    log.info("finished")
    return cfg.out


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        cfg, a = build_config(argv)
        out = run(cfg, resume=a.resume, progress=not a.no_progress, verbose=a.verbose)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished units are saved; continue with --resume --out <dir>", file=sys.stderr)
        return 130
    print(f"results: {out}/tables.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
