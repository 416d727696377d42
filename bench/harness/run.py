"""``python -m bench.run``: every method x mask x image, fanned out with Ray, into one run dir.

python -m bench.run --masks all --preset quick                 # make run (CPU workers)
python -m bench.run --masks all --preset paper --gpus 4        # the thesis's experiment
python -m bench.run --data celeba:/data/img_align_celeba --preset paper --gpus 4
python -m bench.run --resume --out results/runs/2026-11-27T12-00-00

The pieces: :mod:`bench.harness.cli` (flags, validation), :mod:`bench.harness.rundir` (the run directory),
:mod:`bench.harness.workers` (units, the worker), :mod:`bench.harness.execute` (in-process or Ray),
:mod:`bench.report.tables` (tables and figures).
"""

from __future__ import annotations

import csv
import errno
import os
import shutil
import sys
from typing import Optional

from tabulate import tabulate

from bench.harness.cli import UsageError, build_config, build_parser
from bench.harness.config import BenchConfig
from bench.harness.execute import execute
from bench.harness.guard import RunLock, RunLockedError, disk_error_message, quarantine, valid_unit
from bench.harness.numerics import reexec_if_needed
from bench.harness.rundir import check_existing_run, done_units, log, merge_records, prepare_run_dir, setup_logging
from bench.harness.workers import plan_units, resolve_inputs
from bench.report.tables import build_report

__all__ = ["UsageError", "build_config", "build_parser", "main", "run"]


def run(cfg: BenchConfig, resume: bool = False, progress: bool = True, verbose: bool = False) -> str:
    """Run (or, with ``resume``, finish) ``cfg`` into ``cfg.out``; returns the run directory.
    The dataset, its face box and the targets' landmarks are resolved here, once.

    One driver per run directory (a lock; a second one is refused). A start that fails before
    any unit finished removes the directory it created, so the corrected command runs as is.
    """
    check_existing_run(cfg, resume)  # before any work
    created = not os.path.exists(cfg.out)
    try:
        os.makedirs(cfg.out, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--out {cfg.out} is not writable: {e.strerror or e}") from None
    lock = RunLock(cfg.out)
    try:
        lock.acquire()
    except RunLockedError as e:
        raise UsageError(str(e)) from None
    try:
        inputs = resolve_inputs(cfg)
        prepare_run_dir(cfg, resume, inputs.test_set.metadata)
        setup_logging(cfg.out, verbose)
        units = plan_units(cfg)
        done = finished_units(cfg, units) if resume else set()
        todo = [r for r in (u.remaining(done) for u in units) if r is not None]  # one search per unit
        n_all = sum(len(u.members()) for u in units)
        log.info("run %s: %d units, %d already done", cfg.out, n_all, len(done))
        if todo:
            execute(cfg, todo, inputs, progress, verbose)
        merge_records(cfg.out)
        build_report(cfg.out)
        log.info("finished")
    except BaseException:
        lock.release()
        if created and not done_units(cfg.out):
            _close_log()
            shutil.rmtree(cfg.out, ignore_errors=True)  # nothing finished: leave nothing behind
        raise
    lock.release()
    return cfg.out


def finished_units(cfg: BenchConfig, units: list) -> set:
    """Units whose files are complete; a truncated or corrupt unit is moved to ``corrupt/``
    (said on stderr and in run.log) and runs again."""
    present = done_units(cfg.out)
    done = set()
    for u in (m for unit in units for m in unit.members()):
        if u.uid not in present:
            continue
        if valid_unit(cfg.out, u.uid, u.stop - u.start):
            done.add(u.uid)
        else:
            moved = quarantine(cfg.out, u.uid)
            msg = f"unit {u.uid}: incomplete or corrupt files moved to {os.path.dirname(moved[0])}; it runs again"
            log.warning(msg)
            print(f"warning: {msg}", file=sys.stderr)
    return done


def _close_log() -> None:
    for h in list(log.handlers):
        h.close()
        log.removeHandler(h)


def print_summary(run_dir: str, file=None) -> None:
    """The PSNR table (methods x masks, mean ± 95% CI) and where the full tables are."""
    file = file or sys.stdout  # resolved per call: a default bound at import outlives a replaced stdout
    path = os.path.join(run_dir, "tables", "psnr.csv")
    if os.path.isfile(path):
        with open(path) as f:
            rows = list(csv.DictReader(f))
        masks = list(dict.fromkeys(r["mask"] for r in rows))
        table: dict = {}
        for r in rows:
            ci = float(r["ci95_half_width"]) if r["ci95_half_width"] not in ("", "nan") else float("nan")
            table.setdefault(r["method"], {})[r["mask"]] = f"{float(r['mean']):.2f} ± {ci:.2f}"
        body = [[m] + [cells.get(k, "") for k in masks] for m, cells in table.items()]
        n_img = max((int(r.get("n_images") or r["n"]) for r in rows), default=0)  # n_images: newer tables
        n_seeds = max((int(r.get("n_seeds") or 1) for r in rows), default=1)
        seeds = f" x {n_seeds} seeds (stochastic methods; interval over images of seed means)" if n_seeds > 1 else ""
        print(f"PSNR (dB), mean ± 95% CI half-width, {n_img} images{seeds}:", file=file)
        print(tabulate(body, headers=["method", *masks], tablefmt="simple"), file=file)
    print(f"full tables: {os.path.join(run_dir, 'tables.md')}; figures: {os.path.join(run_dir, 'figures')}/", file=file)


def main(argv: Optional[list[str]] = None) -> int:
    if argv is None:  # the command line: under --numerics pinned, restart once with the recipe's environment
        reexec_if_needed(sys.argv[1:])
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
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            print(f"error: {disk_error_message(e, 'the run directory')}", file=sys.stderr)
            return 1
        raise
    print_summary(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
