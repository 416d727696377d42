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


def test_ema_closed_form():
    """decay 0.9, weight 0 then 1, 1: the average is 0.1 then 0.19; integer buffers are copied."""
    from torch import nn

    from facefill_core.training import EMA

    net = nn.Sequential(nn.Linear(1, 1, bias=False), nn.BatchNorm1d(1))
    net[0].weight.data.fill_(0.0)
    ema = EMA(net, 0.9)
    net[0].weight.data.fill_(1.0)
    net[1].num_batches_tracked.fill_(5)
    ema.update(net)
    assert float(ema.shadow["0.weight"]) == pytest.approx(0.1)
    assert int(ema.shadow["1.num_batches_tracked"]) == 5
    ema.update(net)
    assert float(ema.shadow["0.weight"]) == pytest.approx(0.19)
    with pytest.raises(ValueError, match="decay must be in"):
        EMA(net, 1.0)


def test_ema_resume_is_exact_and_export_ships_the_average(tmp_path):
    """3 iterations straight vs 2 + resume: the averaged G is bit-identical; the exported G is the
    average (not the live G), and the resume refuses another decay."""
    from facefill_core.training import export_checkpoint

    full, split = tmp_path / "full", tmp_path / "split"
    train(_cfg(iters=3, ema_decay=0.5), str(full), progress=False)
    train(_cfg(iters=2, ema_decay=0.5), str(split), progress=False)
    with pytest.raises(ValueError, match="ema_decay=0.5.*ema_decay=0.9"):
        train(_cfg(iters=3, ema_decay=0.9), str(split), resume=True, progress=False)
    train(_cfg(iters=3, ema_decay=0.5), str(split), resume=True, progress=False)
    a = torch.load(full / "checkpoint.pt", weights_only=True)
    b = torch.load(split / "checkpoint.pt", weights_only=True)
    for k, v in a["ema_G"].items():
        assert torch.equal(v, b["ema_G"][k]), f"ema G.{k} differs after resume"
    key = next(k for k, v in a["models"]["G"].items() if v.is_floating_point() and v.numel() > 1)
    assert not torch.equal(a["ema_G"][key], a["models"]["G"][key])  # the average lags the live weights
    exp = tmp_path / "w.pt"
    export_checkpoint(str(full / "checkpoint.pt"), str(exp))
    shipped = torch.load(exp, weights_only=True)["G"]
    assert torch.equal(shipped[key], a["ema_G"][key].half())
    assert (full / "samples_ema.png").stat().st_size > 1000


def test_init_from_exported_weights_starts_from_them(tmp_path):
    """A run started from exported weights begins at exactly those (fp16-rounded) G and D
    with fresh optimizers; a file of another kind is refused."""
    from facefill_core.training import export_checkpoint

    train(_cfg(iters=2), str(tmp_path / "a"), progress=False)
    exp = tmp_path / "a.pt"
    export_checkpoint(str(tmp_path / "a" / "checkpoint.pt"), str(exp))
    train(_cfg(iters=0, init_from=str(exp), seed=1), str(tmp_path / "b"), progress=False)
    src = torch.load(exp, weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    for name in ("G", "D"):
        for k, v in src[name].items():
            assert torch.equal(b["models"][name][k], v.float() if v.is_floating_point() else v), f"{name}.{k}"
    assert b["optims"]["G"]["state"] == {}
    with pytest.raises(ValueError, match="holds 'dcgan' weights, expected 'ce'"):
        train(_cfg(model="ce", iters=0, init_from=str(exp)), str(tmp_path / "c"), progress=False)


def test_cli_refuses_bad_ema_decay_and_missing_init_from(tmp_path, capsys):
    assert main(["dcgan", "--ema-decay", "1.0", "--out", str(tmp_path / "a")]) == 2
    assert "--ema-decay must be in [0, 1), got 1.0" in capsys.readouterr().err
    assert main(["dcgan", "--init-from", str(tmp_path / "none.pt"), "--out", str(tmp_path / "b")]) == 2
    assert f"--init-from {tmp_path / 'none.pt'}: no such file" in capsys.readouterr().err
