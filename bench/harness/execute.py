"""Running a run's units: in-process (``--workers 0``, no Ray, nothing listening) or on a pool
of Ray actors. Each unit's records are written to the run directory as soon as it finishes."""

from __future__ import annotations

import logging
import os
import sys

from bench.harness import numerics
from bench.harness.config import BenchConfig
from bench.harness.rundir import log, write_unit
from bench.harness.workers import UnitRunner, WorkerInputs, make_ray_worker


def init_ray(cfg: BenchConfig, n_cpus: int, n_gpus: int, verbose: bool) -> None:
    """Start a local Ray cluster sized to the actors (``n_cpus`` CPUs, ``n_gpus`` GPUs; the
    driver is not an actor), or join ``cfg.address``. Always with Ray's token authentication
    (:func:`bench.harness.cluster.prepare_ray_auth`: a 0600 token, a local cluster's session files in a
    0700 directory; joining a cluster needs its token)."""
    import ray

    from bench.harness.cluster import prepare_ray_auth

    auth_kw = prepare_ray_auth(cfg.address)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    init_kw = dict(
        include_dashboard=False,
        logging_level=logging.INFO if verbose else logging.ERROR,
        log_to_driver=verbose,
        configure_logging=True,
    )
    if cfg.address:
        ray.init(address=cfg.address, **init_kw)
    else:
        ray.init(num_cpus=n_cpus, num_gpus=n_gpus, _node_ip_address="127.0.0.1", **init_kw, **auth_kw)


def in_process(cfg: BenchConfig) -> bool:
    """Whether the run uses no Ray at all."""
    return cfg.gpus == 0 and cfg.workers == 0 and cfg.address is None


def execute(cfg: BenchConfig, units: list, inputs: WorkerInputs, progress: bool = True, verbose: bool = False) -> None:
    """Run ``units`` with the driver's resolved ``inputs``, writing each as it finishes."""
    from tqdm import tqdm

    bar = tqdm(
        total=sum(len(u.members()) for u in units),
        desc="units",
        disable=not progress,
        dynamic_ncols=True,
        file=sys.stderr,
    )
    results = _results(cfg, units, inputs, verbose)
    try:
        for result in results:
            write_unit(cfg.out, result)
            log.info("unit done %s", result["uid"])
            bar.update(1)
    finally:
        results.close()  # shuts Ray down now, also when writing a unit failed
        bar.close()


def _results(cfg: BenchConfig, units: list, inputs: WorkerInputs, verbose: bool):
    if in_process(cfg):
        import torch

        state = numerics.torch_state()  # the caller's torch settings, put back after the run
        try:
            runner = UnitRunner(cfg, cfg.out, inputs, "cpu", torch.get_num_threads())
            for p in runner.numerics_problems:  # e.g. torch loaded before the recipe's environment was set
                log.warning("numerics pinned asked, but not in effect in this process: %s", p)
            for u in units:
                yield from runner.results(u)
        finally:
            numerics.restore(state)
        return
    import ray
    from ray.util import ActorPool

    if cfg.gpus > 0:
        n_actors, per_actor, device = cfg.gpus, {"num_gpus": 1, "num_cpus": 1}, "cuda"
    else:
        n_actors, per_actor, device = cfg.workers, {"num_cpus": 1}, "cpu"
    # the landmark threads' share of the CPUs this process may use; torch's follow --numerics
    threads = numerics.worker_threads(cfg.numerics, numerics.usable_cpus(), cfg.workers, cfg.gpus)[1]
    # the recipe's environment reaches every worker: inherited on a local cluster, and through
    # Ray's runtime_env on the nodes of one started elsewhere (--address); each worker checks it
    recipe = numerics.env_for(cfg.numerics)
    if recipe:
        per_actor = {**per_actor, "runtime_env": {"env_vars": recipe}}
    saved = {k: os.environ.get(k) for k in numerics.PINNED_ENV}
    os.environ.update(recipe)
    try:
        init_ray(cfg, n_actors, cfg.gpus, verbose)
        Worker = make_ray_worker()
        inputs_box = [ray.put(inputs)]  # one copy in the object store; each actor fetches it on its first call
        actors = [
            Worker.options(max_restarts=3, max_task_retries=3, **per_actor).remote(cfg, cfg.out, device, threads)
            for _ in range(min(n_actors, len(units)))
        ]
        for results in ActorPool(actors).map_unordered(lambda a, u: a.results.remote(u, inputs_box), units):
            yield from results
    finally:
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
