"""Method plugins (facefill_core/plugins.py): the example package installed and run by the
harness like a built-in method, under Ray and resumed; --method-module; the errors."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from facefill_core import plugins
from facefill_core.methods import PLUGIN_METHODS, method_info

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "facefill_plugin_example")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The example package pip-installed (its pyproject, its entry point) into a folder on
    sys.path and PYTHONPATH (Ray's workers inherit it); the venv itself is left alone."""
    site = str(tmp_path_factory.mktemp("site"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            site,
            EXAMPLE,
        ],
        check=True,
        capture_output=True,
    )
    old_path, old_env = list(sys.path), os.environ.get("PYTHONPATH")
    sys.path.insert(0, site)
    os.environ["PYTHONPATH"] = site + (os.pathsep + old_env if old_env else "")
    yield site
    sys.path[:] = old_path
    if old_env is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old_env
    PLUGIN_METHODS.pop("blurfill", None)


def test_entry_point_found_and_registered(installed):
    assert "blurfill" in plugins.entry_point_names()
    refs = plugins.resolve(["mean", "blurfill"])
    assert refs == ("facefill_plugin_example:plugin",)
    info = method_info("blurfill")
    assert info.family == "plugin" and info.plugin == "facefill_plugin_example:plugin"
    assert "normalised Gaussian" in info.description


def test_example_plugin_contract(installed):
    from facefill_core.inpainters import build

    plugins.resolve(["blurfill"])
    inp = build("blurfill", device="cpu")
    x = torch.linspace(-1, 1, 2 * 3 * 64 * 64).reshape(2, 3, 64, 64)
    h = torch.zeros(2, 1, 64, 64)
    h[:, :, 16:48, 16:48] = 1
    out = inp.inpaint(x, h, [0, 1])
    assert out.shape == x.shape and torch.equal(out[h.expand_as(x) < 0.5], x[h.expand_as(x) < 0.5])
    # batch independence: image 1 alone gives the same completion
    assert torch.equal(inp.inpaint(x[1:], h[1:], [1]), out[1:])
    # a smooth ramp is filled with values near it: mean error far below the mean fill's
    err = (out - x).abs()[h.expand_as(x) > 0.5].mean().item()
    assert err < 0.05


def _bad_module(tmp_path, body: str, name: str) -> str:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))
    sys.path.insert(0, str(tmp_path))
    return name


def test_load_errors_are_one_line(tmp_path):
    with pytest.raises(ValueError, match="must be package.module:object"):
        plugins.load("nomodule")
    with pytest.raises(ValueError, match=r"nope_pkg.x:y: cannot import nope_pkg.x \(ModuleNotFoundError"):
        plugins.load("nope_pkg.x:y")
    mod = _bad_module(tmp_path, "X = 3\ndef f():\n    return 4\n", "ff_bad_plugin")
    try:
        with pytest.raises(ValueError, match="ff_bad_plugin has no attribute missing"):
            plugins.load(f"{mod}:missing")
        with pytest.raises(ValueError, match="expected a facefill_core.plugins.Plugin or a callable"):
            plugins.load(f"{mod}:X")
        with pytest.raises(ValueError, match="returned int, expected a facefill_core.plugins.Plugin"):
            plugins.load(f"{mod}:f")
    finally:
        sys.path.remove(str(tmp_path))
    with pytest.raises(ValueError, match="plugin name 'telea' is a built-in method's name"):
        plugins.Plugin("telea", "x", lambda c: None)
    with pytest.raises(ValueError, match="plugin name must be letters"):
        plugins.Plugin("a__b", "x", lambda c: None)


def test_plugin_output_checked(tmp_path):
    mod = _bad_module(
        tmp_path,
        """
        import torch
        from facefill_core.plugins import Plugin

        class Bad:
            def inpaint(self, images, holes, idx):
                return images[:, :, :32] * 2

        plugin = Plugin("badshape", "returns the wrong shape", lambda ctx: Bad())
        """,
        "ff_badshape_plugin",
    )
    try:
        plugins.load(f"{mod}:plugin")
        from facefill_core.inpainters import build

        inp = build("badshape")
        h = torch.zeros(1, 1, 64, 64)
        h[..., :8, :8] = 1
        with pytest.raises(
            ValueError, match=r"plugin badshape: inpaint returned \(1, 3, 32, 64\), expected \(1, 3, 64, 64\)"
        ):
            inp.inpaint(torch.zeros(1, 3, 64, 64), h, [0])
    finally:
        sys.path.remove(str(tmp_path))
        PLUGIN_METHODS.pop("badshape", None)


def test_cli_errors(capsys):
    from bench.harness.run import main

    assert main(["--method-module", "nope_pkg.x:y", "--methods", "mean"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--method-module: nope_pkg.x:y: cannot import nope_pkg.x" in err
    assert main(["--methods", "mean,blurfil"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown method 'blurfil'" in err


def test_method_module_weights_recorded_in_process(tmp_path, monkeypatch):
    """--method-module, in-process: records, manifest and the weights' sha256."""
    import hashlib

    from bench.harness.run import main

    weights = tmp_path / "w.bin"
    weights.write_bytes(b"plugin weights 123")
    digest = hashlib.sha256(b"plugin weights 123").hexdigest()
    mod = _bad_module(
        tmp_path,
        f"""
        import torch
        from facefill_core.plugins import Plugin

        class Grey:
            def inpaint(self, images, holes, idx):
                return torch.where(holes > 0.5, torch.zeros_like(images), images)

        plugin = Plugin("greyfill", "mid grey holes", lambda ctx: Grey(), family="classical", weights={str(weights)!r})
        """,
        "ff_grey_plugin",
    )
    monkeypatch.chdir(tmp_path)
    try:
        out = tmp_path / "run"
        rc = main(
            [
                "--method-module",
                f"{mod}:plugin",
                "--methods",
                "greyfill",
                "--masks",
                "centre",
                "--n-images",
                "2",
                "--workers",
                "0",
                "--no-progress",
                "--out",
                str(out),
            ]
        )
        assert rc == 0
        recs = [json.loads(line) for line in open(out / "records.jsonl")]
        assert [r["method"] for r in recs] == ["greyfill", "greyfill"]
        assert all(r["weights_sha256"] == digest and r["known_changed_mean_abs"] == 0.0 for r in recs)
        man = json.load(open(out / "manifest.json"))
        assert man["weights"]["greyfill"]["sha256"] == digest
        assert man["config"]["plugins"] == [f"{mod}:plugin"]
        assert os.path.isfile(out / "outputs" / "png" / "greyfill" / "centre" / "00001.png")
        assert "| greyfill" in open(out / "tables.md").read()
    finally:
        sys.path.remove(str(tmp_path))
        PLUGIN_METHODS.pop("greyfill", None)


@pytest.mark.slow
def test_example_plugin_under_ray_shards_and_resume(installed, tmp_path, monkeypatch):
    """The installed example, named only in --methods: one Ray worker, shards of 2 images,
    then a lost unit is re-run by --resume and gives the same records."""
    from bench.harness.run import main

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    args = [
        "--methods",
        "blurfill,mean",
        "--masks",
        "centre",
        "--n-images",
        "3",
        "--shard-size",
        "2",
        "--workers",
        "1",
        "--no-progress",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    units = sorted(os.listdir(out / "records"))
    assert units == [
        "blurfill__centre__00000-00002.jsonl",
        "blurfill__centre__00002-00003.jsonl",
        "mean__centre__00000-00003.jsonl",
    ]
    first = [json.loads(line) for line in open(out / "records.jsonl")]
    blur = [r for r in first if r["method"] == "blurfill"]
    assert len(blur) == 3 and all(r["node_id"] for r in blur)
    assert all(r["known_changed_mean_abs"] == 0.0 for r in blur)
    mean_psnr = {r["image_index"]: r["psnr"] for r in first if r["method"] == "mean"}
    assert sum(r["psnr"] for r in blur) > sum(mean_psnr.values())  # a real fill, better than a flat colour
    os.remove(out / "records" / "blurfill__centre__00002-00003.jsonl")
    assert main(args + ["--resume"]) == 0
    again = [json.loads(line) for line in open(out / "records.jsonl")]
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("seconds", "node_id")} for r in rs]  # noqa: E731
    assert strip(again) == strip(first)
    log = open(out / "run.log").read()
    assert "3 units, 0 already done" in log and "3 units, 2 already done" in log  # only the lost unit reran
    assert np.load(out / "outputs" / "blurfill__centre__00002-00003.npy").shape == (1, 64, 64, 3)
