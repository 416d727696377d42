"""``python -m bench.score KIT PREDICTIONS --name NAME --out RUN_DIR``: score completions made
elsewhere (any method, any framework) into the harness's records.

``KIT`` is a kit of :mod:`bench.harness.export`; ``PREDICTIONS/<mask>/<index>.png`` holds one completion
per mask and image of the kit (an 8-bit RGB or gray PNG, 64x64 or any multiple of 64, reduced to
64x64 with PIL's box filter, the mean of each block). Everything is checked before anything is
written: a missing, extra, unreadable or wrongly sized file is one line and exit status 2.

The records are those of ``python -m bench.run`` (same fields, same metric code:
:meth:`bench.harness.workers.UnitRunner._records` with the kit's images, face box and target landmarks),
method ``NAME``, plus ``known_changed_mean_abs``: the mean absolute change of the known pixels in
0-255 levels. The image is scored as given (known pixels are not pasted back); ``seconds`` is
None (not measured here) and ``device`` is ``external``.

``--out`` a new directory: a run directory of NAME alone. ``--out`` an existing run directory
made with the kit's data, image count, face box and masks (``bench.harness.run`` with the export's
flags): NAME's records join the built-in methods' there, and the tables and figures are rebuilt,
so ``bench.report.tables``, ``bench.report.paired`` and ``bench.report.compare`` treat NAME like a built-in method.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import re
import sys
from typing import Optional

import numpy as np

from bench.harness.cli import IMAGE_SIZE, UsageError, _Parser
from facefill_core.fileio import sha256_file, write_json_atomic

RESIZE_FILTER = "PIL.Image.BOX"  # a multiple of 64 -> 64: the mean of each k x k block
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m bench.score", description="Score completions of an exported kit.")
    p.add_argument("kit", help="a kit written by python -m bench.export")
    p.add_argument("predictions", help="PREDICTIONS/<mask>/<index>.png, one per mask and image of the kit")
    p.add_argument("--name", required=True, help="the method's name in records and tables")
    p.add_argument("--out", required=True, help="a new run directory, or a run of the kit's data to add NAME to")
    return p


def load_kit(kit: str) -> dict:
    """The kit's manifest, after checking every file against its sha256.

    Raises:
        UsageError: no kit there, or a file missing or changed.
    """
    path = os.path.join(kit, "manifest.json")
    try:
        with open(path) as f:
            man = json.load(f)
    except (OSError, ValueError):
        raise UsageError(f"{kit} is not a kit of python -m bench.export (no readable manifest.json)") from None
    if man.get("format") != "facefill-kit/1":
        raise UsageError(f"{kit}: unknown kit format {man.get('format')!r}")
    for entry in man["images"] + man["mask_files"]:
        p = os.path.join(kit, entry["file"])
        if not os.path.isfile(p) or sha256_file(p) != entry["sha256"]:
            raise UsageError(f"kit file {p} is missing or changed since the export (sha256)")
    return man


def _read_png(path: str, rel: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            if im.format != "PNG":
                raise UsageError(f"{rel}: not a PNG file ({im.format})")
            if im.mode not in ("RGB", "RGBA", "L", "LA", "P"):
                raise UsageError(f"{rel}: mode {im.mode} is not an 8-bit RGB or gray PNG")
            w, h = im.size
            if w != h or w % IMAGE_SIZE:
                raise UsageError(f"{rel} is {w}x{h}: expected {IMAGE_SIZE}x{IMAGE_SIZE} or a square multiple of it")
            im = im.convert("RGB")
            if w != IMAGE_SIZE:
                im = im.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BOX)
            return np.asarray(im, dtype=np.uint8).copy()
    except UsageError:
        raise
    except Exception as e:  # noqa: BLE001 - any decoder error means unreadable
        raise UsageError(f"{rel} cannot be read as an image ({type(e).__name__})") from None


def load_predictions(folder: str, man: dict) -> dict:
    """mask -> uint8 ``(N, 64, 64, 3)`` completions of the kit's images.

    Raises:
        UsageError: the folder is missing; files missing or extra (the first of each named);
            an unreadable, non-PNG or wrongly sized file.
    """
    if not os.path.isdir(folder):
        raise UsageError(f"predictions folder {folder} does not exist")
    n = man["n_images"]
    expected = {f"{m}/{i:05d}.png" for m in man["masks"] for i in range(n)}
    present = set()
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for f in files:
            if not f.startswith("."):
                present.add(os.path.relpath(os.path.join(root, f), folder).replace(os.sep, "/"))
    missing, extra = sorted(expected - present), sorted(present - expected)
    if missing:
        raise UsageError(
            f"{folder}: {len(missing)} of {len(expected)} completions missing (first: {missing[0]}; "
            "expected <mask>/<index>.png, see the kit's README.md)"
        )
    if extra:
        raise UsageError(f"{folder}: {len(extra)} unexpected file(s) (first: {extra[0]}); the kit has no such image")
    return {
        m: np.stack([_read_png(os.path.join(folder, m, f"{i:05d}.png"), f"{m}/{i:05d}.png") for i in range(n)])
        for m in man["masks"]
    }


def kit_arrays(kit: str, man: dict) -> tuple[np.ndarray, dict]:
    """The kit's images uint8 ``(N, 64, 64, 3)`` and masks ``{mask: uint8 (N, 64, 64)}``, 1 = hole."""
    from PIL import Image

    def read(f):
        with Image.open(os.path.join(kit, f)) as im:
            return np.asarray(im, dtype=np.uint8).copy()

    images = np.stack([read(e["file"]) for e in sorted(man["images"], key=lambda e: e["index"])])
    masks = {}
    for m in man["masks"]:
        files = sorted((e for e in man["mask_files"] if e["mask"] == m), key=lambda e: e["index"])
        masks[m] = np.stack([(read(e["file"]) >= 128).astype(np.uint8) for e in files])
    return images, masks


def _same_data(a: str, b: str) -> bool:
    from facefill_core.data import parse_spec

    try:
        sa, sb = parse_spec(a), parse_spec(b)
    except ValueError:
        return False
    if sa.kind != sb.kind:
        return False
    return sa.path is None or os.path.realpath(sa.path) == os.path.realpath(sb.path)


def check_out(out: str, name: str, man: dict, holes: dict) -> Optional[dict]:
    """The run manifest of an existing ``--out`` (None: a new run directory), once it is known
    to hold the kit's images and masks and no records of ``name``.

    Raises:
        UsageError: ``--out`` is a file, a non-empty directory that holds no run, a run of other
            data, image count, box or masks, or one that already has ``name``'s records.
    """
    from bench.harness.rundir import masks_path

    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out {out} is a file, not a directory")
    mp = os.path.join(out, "manifest.json")
    if not os.path.isfile(mp):
        if os.path.isdir(out) and os.listdir(out):
            raise UsageError(f"--out {out} is neither empty nor a run directory (no manifest.json)")
        return None
    with open(mp) as f:
        run = json.load(f)
    cfg = run.get("config", {})
    if not _same_data(str(cfg.get("data")), man["data"]):
        raise UsageError(f"--out {out}: the run is of {cfg.get('data')}, the kit of {man['data']}")
    if cfg.get("n_images") != man["n_images"]:
        raise UsageError(f"--out {out}: the run has {cfg.get('n_images')} images, the kit {man['n_images']}")
    if list(run.get("data", {}).get("box", [])) != list(man["box"]):
        raise UsageError(
            f"--out {out}: the run's face box {run.get('data', {}).get('box')} is not the kit's {man['box']}"
        )
    for m, h in holes.items():
        p = masks_path(out, m)
        if os.path.exists(p) and not np.array_equal(np.load(p), h):
            raise UsageError(f"--out {out}: its {m} masks differ from the kit's (another --seed or mask folder?)")
    rec_dir = os.path.join(out, "records")
    if os.path.isdir(rec_dir) and any(f.startswith(f"{name}__") for f in os.listdir(rec_dir)):
        raise UsageError(f"--out {out} already has records of {name}")
    return run


def score(kit: str, predictions: str, name: str, out: str, command: Optional[list] = None) -> str:
    """Validate, score and write (see the module docstring); returns the run directory.

    Raises:
        UsageError: anything wrong with the kit, the predictions, the name or ``--out``;
            nothing is written then.
    """
    import torch

    from bench.harness.config import BenchConfig
    from bench.harness.rundir import masks_path, merge_records, versions, write_unit
    from bench.harness.workers import Unit, UnitRunner, WorkerInputs
    from bench.report.tables import build_report
    from facefill_core.data import TestSet
    from facefill_core.imaging import uint8_to_signed
    from facefill_core.landmarks import LandmarkPredictor
    from facefill_core.methods import METHODS, PLUGIN_METHODS
    from facefill_core.metrics import METRIC_SETTINGS

    if not _NAME.match(name) or "__" in name:
        raise UsageError(f"--name must be letters, digits, '-', '_', '+', '.' (no '__'), got {name!r}")
    if name in METHODS or name in PLUGIN_METHODS:
        raise UsageError(f"--name {name} is a built-in method's name")
    man = load_kit(kit)
    preds = load_predictions(predictions, man)
    images, holes = kit_arrays(kit, man)
    run = check_out(out, name, man, holes)

    # everything is valid: score (nothing written yet), then write
    n, box = man["n_images"], tuple(man["box"])
    ids = tuple(e["id"] for e in sorted(man["images"], key=lambda e: e["index"]))
    ts = TestSet(images, ids, box, man["data_metadata"])
    points = LandmarkPredictor().predict(images, box=box, rounded=False)  # as bench.harness.workers.resolve_inputs
    cfg = BenchConfig(
        masks=tuple(man["masks"]),
        methods=(),
        data=man["data"],
        n_images=n,
        seed=man["seed"],
        box=tuple(man["box_override"]) if man.get("box_override") else None,
        out=os.path.abspath(out),
    )
    fields = {f.name for f in dataclasses.fields(cfg)}
    if run is not None and "numerics" in fields and "numerics" in run.get("config", {}):
        cfg = dataclasses.replace(cfg, numerics=run["config"]["numerics"])  # the run's floating point
    if run is not None and "metrics" in run.get("config", {}):
        cfg = dataclasses.replace(cfg, metrics=tuple(run["config"]["metrics"]))  # the run's judges: same fields
    runner = UnitRunner(cfg, cfg.out, WorkerInputs(ts, points, holes=holes), "cpu", torch.get_num_threads())
    stub = _External()
    results = []
    for m in man["masks"]:
        unit = Unit(name, m, 0, n)
        records = runner._records(unit, uint8_to_signed(preds[m]), {}, stub, 0.0)
        for r in records:
            r["seconds"], r["device"], r["scored_from"] = None, "external", os.path.abspath(predictions)
        results.append({"uid": unit.uid, "records": records, "outputs": preds[m]})

    if run is None:
        os.makedirs(os.path.join(out, "masks"), exist_ok=True)
        write_json_atomic(
            os.path.join(out, "manifest.json"),
            {
                "config": {**dataclasses.asdict(cfg), "methods": [name], "preset": man.get("preset")},
                "identity": None,  # not a bench.harness.run run: it cannot be resumed
                "data": man["data_metadata"] | {"box": man["box"]},
                "metric_settings": METRIC_SETTINGS,
                "versions": versions(),
                "command": command or ["python", "-m", "bench.score", *sys.argv[1:]],
                "started": dt.datetime.now().isoformat(timespec="seconds"),
            },
        )
    for m, h in holes.items():
        p = masks_path(out, m)
        if not os.path.exists(p):
            os.makedirs(os.path.dirname(p), exist_ok=True)
            np.save(p, h)
    for result in results:
        write_unit(out, result)
    os.makedirs(os.path.join(out, "scored"), exist_ok=True)
    write_json_atomic(
        os.path.join(out, "scored", f"{name}.json"),
        {
            "name": name,
            "kit": os.path.abspath(kit),
            "kit_manifest_sha256": sha256_file(os.path.join(kit, "manifest.json")),
            "predictions": os.path.abspath(predictions),
            "prediction_sha256": {
                f"{m}/{i:05d}.png": sha256_file(os.path.join(predictions, m, f"{i:05d}.png"))
                for m in man["masks"]
                for i in range(n)
            },
            "resize_filter": RESIZE_FILTER,
            "known_pixels": "scored as given; known_changed_mean_abs: mean |change| of known pixels, 0-255 levels",
            "command": command or ["python", "-m", "bench.score", *sys.argv[1:]],
            "scored": dt.datetime.now().isoformat(timespec="seconds"),
        },
    )
    merge_records(out)
    build_report(out)
    return out


class _External:
    """What :meth:`UnitRunner._records` reads of an inpainter, for completions made elsewhere."""

    landmark_backend = None
    weights_sha256 = None


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        a = build_parser().parse_args(argv)
        out = score(a.kit, a.predictions, a.name, a.out, ["python", "-m", "bench.score", *argv])
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"records of {a.name}: {os.path.join(out, 'records.jsonl')}; tables: {os.path.join(out, 'tables.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
