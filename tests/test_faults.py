"""Faults during a run lose nothing: a full disk mid-run, a second driver, a corrupt unit."""

import errno
import json
import os

import numpy as np
import pytest

import bench.harness.rundir as rundir
from bench.harness.guard import RunLock
from bench.harness.run import main

ARGS = ["--no-progress", "--workers", "0", "--methods", "telea,mean", "--masks", "centre", "--n-images", "2"]


def _records(run_dir):
    with open(os.path.join(run_dir, "records.jsonl")) as f:
        return {(r["method"], r["mask"], r["image_id"]): (r["psnr"], r["ssim"], r["nme"]) for r in map(json.loads, f)}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ref") / "run")
    assert main([*ARGS, "--out", out]) == 0
    return _records(out)


class _DiskFullAfter:
    """numpy, except that ``save`` fails like a full disk after ``n`` successful calls."""

    def __init__(self, n):
        self.n = n

    def __getattr__(self, name):
        return getattr(np, name)

    def save(self, f, arr, *a, **k):
        if self.n <= 0:
            f.write(b"\x93NUMPY partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        self.n -= 1
        return np.save(f, arr, *a, **k)


def test_disk_full_mid_run_keeps_finished_units_and_resume_completes(tmp_path, monkeypatch, capsys, reference):
    out = str(tmp_path / "run")
    monkeypatch.setattr(rundir, "np", _DiskFullAfter(1 + 1))  # the mask, then one unit
    assert main([*ARGS, "--out", out]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no space left" in err[0] and "--resume" in err[0], err
    done = sorted(os.listdir(os.path.join(out, "records")))
    assert len(done) == 1 and all(f.endswith(".jsonl") for f in done)  # the finished unit, no temp files
    assert not [f for f in os.listdir(os.path.join(out, "outputs")) if f.startswith(".")]
    monkeypatch.undo()  # space is back
    assert main([*ARGS, "--out", out, "--resume"]) == 0
    assert _records(out) == reference


def test_second_driver_on_the_same_out_is_refused(tmp_path, capsys, reference):
    out = str(tmp_path / "run")
    assert main([*ARGS, "--out", out]) == 0
    capsys.readouterr()
    with RunLock(out):
        assert main([*ARGS, "--out", out, "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "in use by pid" in err[0], err
    assert _records(out) == reference


def test_corrupt_unit_is_detected_on_resume_and_rerun(tmp_path, capsys, reference):
    out = str(tmp_path / "run")
    assert main([*ARGS, "--out", out]) == 0
    rec_dir = os.path.join(out, "records")
    victim = sorted(os.listdir(rec_dir))[0]
    with open(os.path.join(rec_dir, victim), "r+") as f:
        f.truncate(40)  # a record cut in the middle
    capsys.readouterr()
    assert main([*ARGS, "--out", out, "--resume"]) == 0
    err = capsys.readouterr().err
    assert "corrupt" in err and victim[: -len(".jsonl")] in err
    assert os.path.exists(os.path.join(out, "corrupt", victim))
    assert _records(out) == reference


def test_failed_start_leaves_nothing_that_blocks_the_rerun(tmp_path, monkeypatch, reference):
    out = str(tmp_path / "run")
    import bench.harness.run as run_mod

    def boom(cfg):
        raise RuntimeError("dataset went away")

    monkeypatch.setattr(run_mod, "resolve_inputs", boom)
    with pytest.raises(RuntimeError):
        main([*ARGS, "--out", out])
    assert not os.path.exists(out)
    monkeypatch.undo()
    assert main([*ARGS, "--out", out]) == 0
    assert _records(out) == reference
