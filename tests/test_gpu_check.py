"""``make gpu-check``: the agreement rules and the projection on known numbers, and the whole
battery's CPU half as ``make test`` runs it on a machine without CUDA."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from bench.gpu import check as gpu_check
from bench.gpu import report as gpu_report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rec(method, family, psnr, ssim=0.5, winner=None, i=0):
    return {"method": method, "family": family, "mask": "centre", "image_index": i, "psnr": psnr, "ssim": ssim,
            "nme": 0.1, "winner": winner}  # fmt: skip


def test_agreement_rules_per_family():
    a = [_rec("telea", "classical", 30.0), _rec("ce", "feedforward", 25.0), _rec("si", "latent", 20.0, winner=3),
         _rec("si", "latent", 21.0, winner=1, i=1)]  # fmt: skip
    b = [_rec("telea", "classical", 30.0), _rec("ce", "feedforward", 25.0005), _rec("si", "latent", 20.04, winner=3),
         _rec("si", "latent", 21.4, winner=2, i=1)]  # fmt: skip
    rows = {r["method"]: r for r in gpu_report.agreement(a, b, "cpu vs cuda")}
    assert rows["telea"]["ok"] and rows["telea"]["max_dpsnr"] == 0 and rows["telea"]["max_dnme"] == 0
    assert rows["ce"]["ok"] and rows["ce"]["max_dpsnr"] == pytest.approx(5e-4)
    # image 0: same winner, 0.04 dB <= 0.05; image 1: other winner, 0.4 dB <= 0.5
    assert rows["si"]["ok"] and rows["si"]["same_winners"] == 1 and rows["si"]["max_dpsnr"] == pytest.approx(0.4)
    assert all(r["missing"] is None for r in rows.values())
    b[2]["psnr"] = 20.06  # same winner, 0.06 dB apart: the same z cannot give that
    assert not {r["method"]: r for r in gpu_report.agreement(a, b, "x")}["si"]["ok"]
    b[2]["psnr"] = 22.0  # same winner, 2 dB apart
    assert not gpu_report.agreement(a, b, "x")[2]["ok"]
    b[2]["psnr"] = 20.3  # mixed precision: 0.3 and 0.4 dB pass whatever the winner, 0.6 does not
    assert gpu_report.agreement(a, b, "x", strict=True)[2]["ok"]
    b[3]["psnr"] = 21.6
    assert not gpu_report.agreement(a, b, "x", strict=True)[2]["ok"]
    b[1]["psnr"] = 25.01
    rows = {r["method"]: r for r in gpu_report.agreement(a, b, "x")}
    assert not rows["ce"]["ok"] and not rows["si"]["ok"]
    b[0]["psnr"] = 30.0 + 1e-9
    assert not gpu_report.agreement(a[:1], b[:1], "x")[0]["ok"]  # classical fills must be equal
    b[0]["psnr"], b[0]["nme"] = 30.0, 0.1 + 1e-9
    assert not gpu_report.agreement(a[:1], b[:1], "x")[0]["ok"]  # NME included


def test_agreement_fails_on_nan():
    a = [_rec("ce", "feedforward", 25.0), _rec("si", "latent", 20.0, winner=1)]
    b = [_rec("ce", "feedforward", float("nan")), _rec("si", "latent", float("nan"), winner=1)]
    assert [r["ok"] for r in gpu_report.agreement(a, b, "x")] == [False, False]
    b = [_rec("ce", "feedforward", 25.0, ssim=float("nan")), _rec("si", "latent", 20.0, ssim=None, winner=1)]
    assert [r["ok"] for r in gpu_report.agreement(a, b, "x")] == [False, False]


def test_agreement_names_every_missing_or_duplicated_pair_in_one_line():
    a = [_rec("si", "latent", 20.0, winner=0, i=i) for i in range(3)] + [_rec("telea", "classical", 30.0)]
    b = [_rec("si", "latent", 20.0, winner=0, i=i) for i in (0, 2, 2)] + [_rec("mean", "classical", 10.0)]
    rows = {r["method"]: r for r in gpu_report.agreement(a, b, "cpu vs cuda")}
    assert set(rows) == {"si", "telea", "mean"} and not any(r["ok"] for r in rows.values())
    assert rows["si"]["missing"] == "2 unpaired: centre #1 not in cuda; centre #2 2x in cuda"
    assert rows["si"]["n"] == 2 and rows["si"]["max_dpsnr"] == 0  # what is paired (#0, #2) still agrees
    assert rows["telea"]["missing"] == "1 unpaired: centre #0 not in cuda" and rows["telea"]["n"] == 0
    assert rows["mean"]["missing"] == "1 unpaired: centre #0 not in cpu" and rows["mean"]["n"] == 0
    assert "\n" not in rows["si"]["missing"]
    # the same records on both sides: nothing missing, all agree
    assert all(r["ok"] and r["missing"] is None for r in gpu_report.agreement(a, list(a), "cpu vs cuda"))


def test_landmark_parity_rule_bounds_mean_p99_and_max():
    d = np.zeros(64 * 136)
    assert gpu_report.landmark_parity_ok(d)
    d[:40] = 0.5  # mean 0.0018, 99th percentile 0, max 0.5: a few points on a tree threshold
    assert gpu_report.landmark_parity_ok(d)
    one = d.copy()
    one[0] = 2.6  # one point past the max
    assert not gpu_report.landmark_parity_ok(one)
    tail = np.zeros_like(d)
    tail[: len(d) // 50] = 0.4  # 2 % at 0.4 px: mean 0.008, 99th percentile 0.4 > 0.3
    assert tail.mean() <= gpu_report.LANDMARK_MEAN_TOL and not gpu_report.landmark_parity_ok(tail)
    drift = np.full_like(d, 0.02)  # every point 0.02 px off: mean past 0.015
    assert not gpu_report.landmark_parity_ok(drift)
    assert not gpu_report.landmark_parity_ok(np.array([np.nan])) and not gpu_report.landmark_parity_ok(np.array([]))
    assert (gpu_check.LANDMARK_MEAN_TOL, gpu_check.LANDMARK_P99_TOL, gpu_check.LANDMARK_MAX_TOL) == (0.015, 0.3, 2.5)


def test_projection_closed_form(monkeypatch):
    monkeypatch.setattr(gpu_report, "_methods", lambda: {
        "si": type("I", (), {"family": "latent"})(), "mean": type("I", (), {"family": "classical"})()})  # fmt: skip
    steps = [
        {"method": "si", "precision": "fp32", "B": 16, "K": 64, "ms_per_step": 32.0},  # 0.03125 ms / candidate-step
        {"method": "si", "precision": "fp32", "B": 1, "K": 64, "ms_per_step": 4.0},  # 0.0625: slower per image
        {"method": "si", "precision": "fp16 autocast", "B": 16, "K": 64, "ms_per_step": 1.0},  # not fp32: ignored
    ]
    p = gpu_report.projection(steps, {"seconds_per_image": {"mean": 0.01}})
    assert p["seconds_per_image"]["si"] == pytest.approx(32.0 / 1000 / 16 * 1000)  # 2 s per image
    assert p["wall_h_1"] == pytest.approx(500 * 4 * 2.01 / 3600)
    assert p["wall_h_4"] == pytest.approx(p["wall_h_1"] / 4)


def test_choices_pick_the_cheapest_candidate_step_and_backend():
    rows = [
        {"method": "si-ld", "precision": "fp32", "B": 1, "K": 64, "backend": "torch", "overlap_threads": None,
         "ms_per_step": 8.0},
        {"method": "si-ld", "precision": "fp32", "B": 16, "K": 64, "backend": "torch", "overlap_threads": None,
         "ms_per_step": 40.0},
        {"method": "si-ld", "precision": "fp32", "B": 16, "K": 64, "backend": "cpp", "overlap_threads": 0,
         "ms_per_step": 30.0},
        {"method": "si-ld", "precision": "bf16 autocast", "B": 16, "K": 64, "backend": "torch",
         "overlap_threads": None, "ms_per_step": 20.0},
        {"method": "si-ld", "B": 64, "K": 64, "backend": "torch", "error": "out of memory"},
    ]  # fmt: skip
    mixed = [{"method": "si-ld", "ok": False}]
    (c,) = gpu_report.choices(rows, mixed)
    assert c == {"method": "si-ld", "best_BxK": "16x64", "fastest_backend": "cpp (all threads)",
                 "autocast_speedup": 2.0, "autocast_within_tol": False}  # fmt: skip


def test_slug_is_a_plain_directory_name():
    assert gpu_check.slug("NVIDIA H100 80GB HBM3") == "NVIDIA-H100-80GB-HBM3"
    assert gpu_check.slug("CPU Intel(R) Xeon(R) @ 2.2GHz") == "CPU-Intel-R-Xeon-R-2.2GHz"


def test_bad_section_is_one_line_exit_2(capsys):
    assert gpu_check.main(["--only", "records,warp"]) == 2
    assert "--only" in capsys.readouterr().err


@pytest.mark.slow
def test_cpu_half_runs_and_says_cuda_was_not_run(tmp_path):
    r = subprocess.run([sys.executable, "-m", "bench.gpu.check", "--device", "cpu", "--threads", "1",
                        "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    d = tmp_path / gpu_check.slug(gpu_check.device_name(torch.device("cpu")))
    rep = json.loads((d / "report.json").read_text())
    assert "CUDA half: not run" in (d / "report.md").read_text()
    assert rep["cuda_half_run"] is False and rep["errors"] == {} and rep["agreement"] == []
    size = gpu_check.SIZES["small"]
    recs = rep["records"]["cpu"]
    methods = gpu_check._methods()
    assert len(recs) == len(methods) * len(gpu_check.MASKS) * size["n_images"]
    assert all(5 < r["psnr"] < 60 and -1 <= r["ssim"] <= 1 for r in recs)
    assert all(0 <= r["winner"] < size["candidates"] for r in recs if r["family"] == "latent")
    assert [r["batch"] for r in rep["landmarks"]] == list(size["lm_batches"])
    assert all(r["ok"] and r["mean_abs_px"] <= gpu_check.LANDMARK_MEAN_TOL for r in rep["landmarks"])
    lm_tol = (gpu_check.LANDMARK_P99_TOL, gpu_check.LANDMARK_MAX_TOL)
    assert all(r["p99_abs_px"] <= lm_tol[0] and r["max_abs_px"] <= lm_tol[1] for r in rep["landmarks"])
    steps = rep["steps"]
    assert all(r["ms_per_step"] > 0 and r["peak_mem_mib"] is None for r in steps)
    assert all(r["landmark_wait_share"] == 0 for r in steps if r["method"] == "si")  # no landmarks at all
    torch_ld = [r for r in steps if r["method"] == "si-ld" and r["backend"] == "torch"]
    assert len(torch_ld) == len(size["steps"]) and all(0 < r["landmark_wait_share"] <= 1 for r in torch_ld)
    assert any(r["precision"] == "bf16 autocast" for r in steps)
    assert [r["method"] for r in rep["mixed_precision"]] == list(size["amp_methods"])
    assert {r["model"] for r in rep["training"]} == {"dcgan", "ce", "gfc"}
    assert all(r["its_per_s"] > 0 for r in rep["training"])
    assert rep["end_to_end"]["records"] == len(methods) * 1 * 2  # all methods x centre x 2 images
    assert rep["projection"]["wall_h_1"] == pytest.approx(4 * rep["projection"]["wall_h_4"])


def test_default_out_is_a_new_directory_never_the_committed_results():
    import re

    out = gpu_check.default_out()
    assert re.fullmatch(r"results/runs/gpu-check-\d{8}-\d{6}", out), out
    assert not out.startswith(os.path.join("results", "gpu"))
