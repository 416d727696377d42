import csv
import json

import pytest
import torch

from facefill_core.config import TrainConfig
from facefill_core.train import main, train


def _cfg(**kw):
    base = dict(
        model="dcgan",
        data="embedded",
        iters=3,
        batch_size=8,
        ngf=8,
        ndf=8,
        n_train=32,
        checkpoint_every=2,
        num_threads=1,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_three_iterations_then_resume_is_exact(tmp_path):
    full, split = tmp_path / "full", tmp_path / "split"
    train(_cfg(iters=3), str(full), progress=False)
    train(_cfg(iters=2), str(split), progress=False)
    train(_cfg(iters=3), str(split), resume=True, progress=False)
    a = torch.load(full / "checkpoint.pt", weights_only=True)
    b = torch.load(split / "checkpoint.pt", weights_only=True)
    assert a["iter"] == b["iter"] == 3
    for name in ("G", "D"):
        for k, v in a["models"][name].items():
            assert torch.equal(v, b["models"][name][k]), f"{name}.{k} differs after resume"
    rows = list(csv.DictReader(open(split / "loss.csv")))
    assert [int(r["iter"]) for r in rows] == [1, 2, 3]
    assert (split / "samples.png").stat().st_size > 1000


def test_resume_refuses_other_config(tmp_path):
    train(_cfg(iters=2), str(tmp_path), progress=False)
    with pytest.raises(ValueError, match="ngf=8.*ngf=16"):
        train(_cfg(iters=3, ngf=16), str(tmp_path), resume=True, progress=False)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(_cfg(), str(tmp_path / "empty"), resume=True, progress=False)


def test_cli_records_command_and_exports(tmp_path):
    out = tmp_path / "run"
    exp = tmp_path / "w.pt"
    argv = [
        "dcgan",
        "--iters",
        "2",
        "--batch-size",
        "4",
        "--ngf",
        "8",
        "--ndf",
        "8",
        "--n-train",
        "16",
        "--threads",
        "1",
        "--out",
        str(out),
        "--no-progress",
        "--export",
        str(exp),
    ]
    assert main(argv) == 0
    cmd = json.load(open(out / "command.json"))
    assert cmd["command"][-len(argv) :] == argv
    meta = json.load(open(tmp_path / "w.json"))
    assert meta["iters"] == 2 and len(meta["sha256"]) == 64
    from facefill_core.pretrained import load_dcgan

    g, d, m = load_dcgan(str(exp))
    assert g(torch.zeros(1, 100)).shape == (1, 3, 64, 64) and not g.training


def test_cli_bad_data(tmp_path, capsys):
    assert main(["dcgan", "--data", "folder:/no/such", "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_ctrl_c_leaves_usable_checkpoint(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "facefill_core.train",
        "dcgan",
        "--iters",
        "100000",
        "--batch-size",
        "4",
        "--ngf",
        "8",
        "--ndf",
        "8",
        "--n-train",
        "16",
        "--threads",
        "1",
        "--checkpoint-every",
        "100000",
        "--out",
        str(out),
        "--no-progress",
    ]
    p = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "loss.csv").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(3.0)  # some iterations in, far from any periodic checkpoint
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "--resume" in err
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    assert 0 < ck["iter"] < 100000
    cfg = _cfg(iters=ck["iter"] + 1, batch_size=4, n_train=16, checkpoint_every=100000)
    s = train(cfg, str(out), resume=True, progress=False)
    assert torch.load(s["checkpoint"], weights_only=True)["iter"] == ck["iter"] + 1


@pytest.mark.parametrize("model", ["dcgan", "ce", "gfc"])
def test_ctrl_c_between_d_and_g_steps_resumes_exactly(tmp_path, monkeypatch, model):
    """A SIGINT that lands after the discriminator's update and before the generator's: the
    run finishes that iteration, saves it, stops (KeyboardInterrupt), and resuming gives every
    weight and optimizer state of an uninterrupted run bit for bit."""
    import os
    import signal

    from facefill_core import training

    real_task = training.TASKS[model]

    def interrupting(cfg, device):
        task = real_task(cfg, device)
        calls = {"n": 0}
        for name, opt in task.optimizers().items():
            if name == "G":
                continue
            orig = opt.step

            def step_then_sigint(*a, _orig=orig, **k):
                out = _orig(*a, **k)
                calls["n"] += 1
                if calls["n"] == 2:  # the second iteration's D update, mid-iteration
                    os.kill(os.getpid(), signal.SIGINT)
                return out

            opt.step = step_then_sigint
            break
        return task

    kw = dict(model=model, iters=4, checkpoint_every=100)
    full, cut = tmp_path / "full", tmp_path / "cut"
    train(_cfg(**kw), str(full), progress=False)
    monkeypatch.setitem(training.TASKS, model, interrupting)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(**kw), str(cut), progress=False)
    monkeypatch.undo()
    saved = torch.load(cut / "checkpoint.pt", weights_only=True)
    assert saved["iter"] == 2  # the interrupted iteration was completed, then saved
    train(_cfg(**kw), str(cut), resume=True, progress=False)
    a = torch.load(full / "checkpoint.pt", weights_only=True)
    b = torch.load(cut / "checkpoint.pt", weights_only=True)
    assert a["iter"] == b["iter"] == 4
    for name, state in a["models"].items():
        for k, v in state.items():
            assert torch.equal(v, b["models"][name][k]), f"{model} {name}.{k} differs after Ctrl-C + resume"
    for name, state in a["optims"].items():
        for idx, st in state["state"].items():
            for k, v in st.items():
                assert torch.equal(torch.as_tensor(v), torch.as_tensor(b["optims"][name]["state"][idx][k])), (
                    f"{model} optimizer {name} state {k} differs"
                )
    rows = list(csv.DictReader(open(cut / "loss.csv")))
    assert [int(r["iter"]) for r in rows] == [1, 2, 3, 4]
