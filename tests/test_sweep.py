import pytest

from bench.harness.sweep import Variant, expand, format_value, parse_label, parse_sweep, parse_sweeps, sort_key


def test_parse_sweep_types_and_order():
    assert parse_sweep("margin=1,2,3,5,8") == ("margin", (1.0, 2.0, 3.0, 5.0, 8.0))
    assert parse_sweep("lambda=0.01, 0.003") == ("lambda", (0.01, 0.003))  # order kept
    name, vals = parse_sweep("candidates=4,16")
    assert (name, vals) == ("candidates", (4, 16)) and all(type(v) is int for v in vals)


@pytest.mark.parametrize(
    "spec,msg",
    [
        ("margin", r"--sweep must be NAME=v1,v2,..., got 'margin'"),
        ("radius=1,2", r"unknown parameter 'radius'; known: margin, lambda, candidates, iters, steer"),
        ("iters=10,2.5", r"'2.5' is not an integer"),
        ("margin=1,x", r"'x' is not a number"),
        ("margin=-1", r"margin must be >= 0.0 and finite, got -1"),
        ("candidates=0", r"candidates must be >= 1 and finite, got 0"),
        ("lambda=nan", r"lambda must be >= 0.0 and finite, got nan"),
        ("margin=2,2.0", r"value 2.0 is repeated"),
        ("margin=", r"'' is not a number"),
    ],
)
def test_parse_sweep_errors(spec, msg):
    with pytest.raises(ValueError, match=msg):
        parse_sweep(spec)


def test_parse_sweeps_once_per_parameter():
    assert parse_sweeps(["margin=1,2", "steer=0,3"]) == (("margin", (1.0, 2.0)), ("steer", (0.0, 3.0)))
    with pytest.raises(ValueError, match="margin is swept twice"):
        parse_sweeps(["margin=1", "margin=2"])


def test_expand_labels_and_shared_units():
    sweeps = parse_sweeps(["margin=1,2", "steer=0,3"])
    labels = [v.label for v in expand(["si", "si-ld", "si-ld+", "telea"], sweeps)]
    assert labels == [
        "si",  # neither setting affects si: one run
        "si-ld[margin=1]",
        "si-ld[margin=2]",  # si-ld counts landmarks but does not steer
        "si-ld+[margin=1,steer=0]",
        "si-ld+[margin=1,steer=3]",
        "si-ld+[margin=2,steer=0]",
        "si-ld+[margin=2,steer=3]",
        "telea",
    ]
    v = expand(["si-ld+"], sweeps)[1]
    assert v.overrides() == {"landmark_margin_px": 1.0, "steer_weight": 3.0}
    assert v.sweep_values() == {"margin": 1.0, "steer": 3.0}
    assert [v.label for v in expand(["si", "ce"], parse_sweeps(["lambda=0.001,0.01"]))] == [
        "si[lambda=0.001]",
        "si[lambda=0.01]",
        "ce",
    ]
    assert [v.label for v in expand(["si", "mean"], ())] == ["si", "mean"]


def test_labels_round_trip_and_sort():
    for v in expand(["si-ld+", "mean"], parse_sweeps(["margin=0.5,3", "iters=10"])):
        assert parse_label(v.label) == v
    assert parse_label("si-ld[margin=2]") == Variant("si-ld", (("margin", 2.0),))
    assert parse_label("telea") == Variant("telea")
    assert format_value(2.0) == "2" and format_value(0.003) == "0.003" and format_value(16) == "16"
    order = ["si", "si-ld", "telea"]
    labels = ["telea", "si-ld[margin=10]", "si", "si-ld[margin=2]", "si-ld[margin=1.5]"]
    assert sorted(labels, key=lambda s: sort_key(s, order)) == [
        "si",
        "si-ld[margin=1.5]",
        "si-ld[margin=2]",
        "si-ld[margin=10]",
        "telea",
    ]
    with pytest.raises(ValueError, match=r"method label must be NAME or NAME\[param=value,...\], got 'si\[x'"):
        parse_label("si[x")


# -- the harness: --sweep end to end ----------------------------------------------------------
SWEEP_RUN = [
    "--methods",
    "si,si-ld,telea",
    "--masks",
    "centre",
    "--n-images",
    "2",
    "--shard-size",
    "1",
    "--iters",
    "4",
    "--candidates",
    "2",
    "--workers",
    "0",
    "--no-progress",
]


def test_sweep_run_labels_shares_and_resumes(tmp_path, capsys):
    import json
    import os

    from bench.harness.run import main

    out = str(tmp_path / "sweep")
    assert main(SWEEP_RUN + ["--sweep", "margin=1,5", "--out", out]) == 0
    with open(os.path.join(out, "records.jsonl")) as f:
        recs = [json.loads(line) for line in f]
    by = {}
    for r in recs:
        by.setdefault(r["method"], []).append(r)
    assert sorted(by) == ["si", "si-ld[margin=1]", "si-ld[margin=5]", "telea"]  # si, telea: once
    assert all(len(v) == 2 for v in by.values())
    r = by["si-ld[margin=5]"][0]
    assert r["base_method"] == "si-ld" and r["sweep"] == {"margin": 5.0}
    assert "sweep" not in by["si"][0] and "base_method" not in by["telea"][0]
    assert {"scale", "scale_eyes", "scale_jaw", "scale_signed"} <= set(r)
    man = json.load(open(os.path.join(out, "manifest.json")))
    assert man["inpaint_config"]["si-ld[margin=5]"]["landmark_margin_px"] == 5.0
    assert man["inpaint_config"]["si-ld[margin=1]"]["landmark_margin_px"] == 1.0
    assert man["config"]["sweep"] == [["margin", [1.0, 5.0]]]
    md = open(os.path.join(out, "tables.md")).read()
    assert "| si-ld[margin=1]" in md and "| si-ld[margin=5]" in md and "Sweep: margin = [1.0, 5.0]" in md
    for f in ("sweep_margin.png", "trajectory_centre.png", "landmarks_centre.png", "grid_centre.png"):
        assert os.path.exists(os.path.join(out, "figures", f)), f
    trajs = sorted(os.listdir(os.path.join(out, "trajectories")))
    assert trajs == [  # the first shard of each latent label
        "si-ld[margin=1]__centre__00000-00001.npz",
        "si-ld[margin=5]__centre__00000-00001.npz",
        "si__centre__00000-00001.npz",
    ]
    import numpy as np

    with np.load(os.path.join(out, "trajectories", trajs[-1])) as z:
        assert z["steps"].tolist() == [0, 1, 2, 4] and z["images"].shape == (4, 1, 64, 64, 3)
        final = np.load(os.path.join(out, "outputs", "si__centre__00000-00001.npy"))
        np.testing.assert_array_equal(z["images"][-1], final)  # the last snapshot is the output
    # resume with one more value: only its units run
    before = {f: os.path.getmtime(os.path.join(out, "records", f)) for f in os.listdir(os.path.join(out, "records"))}
    assert main(SWEEP_RUN + ["--sweep", "margin=1,5,8", "--out", out, "--resume"]) == 0
    log = open(os.path.join(out, "run.log")).read()
    assert "9 units, 7 already done" in log
    after = os.listdir(os.path.join(out, "records"))
    assert sorted(set(after) - set(before)) == [
        "si-ld[margin=8]__centre__00000-00001.jsonl",
        "si-ld[margin=8]__centre__00001-00002.jsonl",
    ]
    assert all(os.path.getmtime(os.path.join(out, "records", f)) == t for f, t in before.items())
    # a sweep that affects none of the methods is a usage error
    assert main(SWEEP_RUN[:1] + ["telea"] + SWEEP_RUN[2:] + ["--sweep", "margin=1", "--out", str(tmp_path / "x")]) == 2
    assert "--sweep margin: it affects none of the methods (telea)" in capsys.readouterr().err


def test_margin_variants_share_one_search_and_equal_separate_runs(tmp_path):
    """A margin sweep runs one search per (method, mask, shard); each margin's records equal a
    run of that margin alone, bit for bit (the margin enters only the final choice)."""
    import json
    import os

    from bench.harness.run import main

    def records(out):
        with open(os.path.join(out, "records.jsonl")) as f:
            return {(r["method"], r["image_index"]): r for r in map(json.loads, f)}

    # the left half: there margins 0 and 8 choose different candidates for image 0 under both methods
    # (on the centre mask, with the shipped prior, they choose the same for these two images)
    base = ["--methods", "si-ld,si-ld+", "--masks", "left", "--n-images", "2", "--candidates", "6",
            "--iters", "4", "--workers", "0", "--no-progress"]  # fmt: skip
    shared = str(tmp_path / "shared")
    assert main(base + ["--sweep", "margin=0,8", "--out", shared]) == 0
    got = records(shared)
    runs = {m: str(tmp_path / f"alone{m}") for m in (0, 8)}
    for m, out in runs.items():
        assert main(base + ["--sweep", f"margin={m}", "--out", out]) == 0
        alone = records(out)
        assert sorted(alone) == sorted(k for k in got if k[0].endswith(f"[margin={m}]")), sorted(alone)
        assert len(alone) == 4  # si-ld and si-ld+ x 2 images: the loop below has records to compare
        for key, r in alone.items():
            s = got[key]
            assert (s["psnr"], s["ssim"], s["nme"]) == (r["psnr"], r["ssim"], r["nme"]), key
            assert "shared_search" not in r
    lead = {r["shared_search"] for r in got.values()}
    assert lead == {"si-ld[margin=0]__left__00000-00002", "si-ld+[margin=0]__left__00000-00002"}
    # the margin does choose: at 0 px every coordinate counts, at 8 px few do
    differ = [
        k
        for k in got
        if k[0].endswith("[margin=0]") and got[k]["psnr"] != got[(k[0].replace("=0", "=8"), k[1])]["psnr"]
    ]
    assert differ, "margins 0 and 8 chose the same candidate everywhere: the test cannot tell them apart"
    log = open(os.path.join(shared, "run.log")).read()
    assert log.count("unit done") == 4  # 2 methods x 2 margins written from 2 searches


def test_inject_crash_fires_on_any_member_of_a_shared_unit(tmp_path, monkeypatch):
    """--inject-crash names a unit by uid; a margin variant that rides on another label's search
    must still crash (once), or a kill-and-resume test of a sweep would test nothing."""
    import dataclasses

    from bench.harness.config import BenchConfig
    from bench.harness.rundir import prepare_run_dir
    from bench.harness.workers import UnitRunner, plan_units, resolve_inputs

    cfg = BenchConfig(masks=("centre",), methods=("si-ld",), n_images=1, candidates=2, iters=1, out=str(tmp_path),
                      sweep=(("margin", (1.0, 5.0)),))  # fmt: skip
    (unit,) = plan_units(cfg)
    assert unit.shares == ("si-ld[margin=5]",)
    target = unit.members()[1].uid
    cfg = dataclasses.replace(cfg, inject_crash=target)
    inputs = resolve_inputs(cfg)
    prepare_run_dir(cfg, False, inputs.test_set.metadata)

    class Died(Exception):
        pass

    def fake_exit(code):
        raise Died(code)

    monkeypatch.setattr("bench.harness.workers.os._exit", fake_exit)
    runner = UnitRunner(cfg, str(tmp_path), inputs, "cpu", 1)
    with pytest.raises(Died):
        runner.results(unit)
    assert (tmp_path / f".crashed-{target}").exists()
    assert [r["uid"] for r in runner.results(unit)] == [m.uid for m in unit.members()]  # once only
    with pytest.raises(ValueError, match="use results"):
        runner.run(unit)
