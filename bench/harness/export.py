"""``python -m bench.export --out KIT``: the harness's test images and masks as a kit of PNG files
that any inpainter, in any framework, can complete; ``python -m bench.score`` scores the
completions into the harness's records (:mod:`bench.harness.score`).

    python -m bench.export --out kit                                   # embedded, 8 faces, 4 masks
    python -m bench.export --data folder:faces --masks centre,free30 --out kit

The data, masks, image count, seed and box flags mean what they mean to ``python -m bench.run``,
so a kit holds exactly the images and masks of the run made with the same flags. A kit::

    README.md                 what to produce
    manifest.json             ids, sizes, data spec, face box, mask kinds and seed, sha256 of every file
    images/<index>.png        the undamaged test images, 64x64 RGB (index: 5 digits, 00000 ...)
    masks/<mask>/<index>.png  64x64 8-bit gray, 255 = hole (to fill), 0 = known
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import sys
import tempfile
from typing import Optional

import numpy as np

from bench.harness.cli import (
    IMAGE_SIZE,
    UsageError,
    _parse_box,
    _Parser,
    check_mask_folder,
)
from bench.harness.config import PRESETS, BenchConfig
from facefill_core.fileio import sha256_file, write_json_atomic
from facefill_core.masks import FOLDER, MASK_KINDS, parse_mask_spec

KIT_FORMAT = "facefill-kit/1"
HOLE_VALUE = 255  # a mask PNG's hole pixels; known pixels are 0

README = """# facefill evaluation kit

{n} test faces ({data}), {size}x{size} RGB, and their hole masks: {masks}.

- `images/<index>.png`: the undamaged faces (index: five digits, `00000` to `{last:05d}`).
  Never show the hole pixels of these to your method: they are the answer.
- `masks/<mask>/<index>.png`: 8-bit gray, **255 = hole** (pixels to fill), 0 = known.
- `manifest.json`: image ids, the data spec, the face box `{box}` (left, top, right, bottom) the
  landmark metric uses, mask kinds and seed, and the sha256 of every file.

What to produce: for every mask and image, the completed image, saved as

    PREDICTIONS/<mask>/<index>.png      e.g. PREDICTIONS/{first_mask}/00000.png

an RGB (or gray) 8-bit PNG of {size}x{size} pixels, or of any multiple of {size} (128, 256, ...),
which is reduced to {size}x{size} with PIL's box filter (the mean of each block). Every file must
be there, and nothing else. The image is scored as given: paste the known pixels back yourself
if your method should keep them; the records say how far they moved (`known_changed_mean_abs`).
Then

    python -m bench.score KIT PREDICTIONS --name YOUR_METHOD --out RUN_DIR

writes the harness's records, tables and figures for YOUR_METHOD (into an existing run
directory made with the same data, image count, seed and masks, beside the built-in methods).
"""


def build_parser() -> _Parser:
    p = _Parser(prog="python -m bench.export", description="Export the test images and masks as a PNG kit.")
    p.add_argument("--out", required=True, help="the kit's directory (must not exist, or be empty)")
    p.add_argument(
        "--masks", default="all", help=f"all | comma list of {','.join(MASK_KINDS)} and folder:DIR (PNG masks)"
    )
    p.add_argument("--data", default="embedded", help="embedded | celeba:PATH | folder:PATH | folder-split:PATH")
    p.add_argument(
        "--n-images", type=int, default=None, help="test images (embedded: the preset's, quick 8, paper 500; else all)"
    )
    p.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    p.add_argument("--seed", type=int, default=0, help="the masks' seed (as bench.harness.run's --seed)")
    p.add_argument("--box", default=None, help="override the canonical face box: left,top,right,bottom")
    return p


def build_config(argv: list[str]) -> BenchConfig:
    """The run configuration whose images and masks the kit holds (validated like bench.harness.run's).

    Raises:
        UsageError: one line naming the flag and the value.
    """
    from facefill_core.data import FaceDataset

    a = build_parser().parse_args(argv)
    try:
        masks, mask_folder = parse_mask_spec(a.masks)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if a.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {a.seed}")
    if a.n_images is not None and a.n_images <= 0:
        raise UsageError(f"--n-images must be positive, got {a.n_images}")
    box = _parse_box(a.box)
    try:
        ds = FaceDataset(a.data, box=box)
    except (ValueError, FileNotFoundError, NotADirectoryError, ImportError) as e:
        raise UsageError(f"--data: {e}") from None
    n = a.n_images if a.n_images is not None else (PRESETS[a.preset]["n_images"] if a.data == "embedded" else None)
    n = len(ds.test_ids) if n is None else n
    if n > len(ds.test_ids):
        raise UsageError(f"--n-images {n}: {a.data} has only {len(ds.test_ids)} test images")
    if os.path.exists(a.out) and (not os.path.isdir(a.out) or os.listdir(a.out)):
        raise UsageError(f"--out {a.out} exists and is not an empty directory")
    return BenchConfig(
        masks=masks,
        methods=(),
        data=a.data,
        preset=a.preset,
        n_images=n,
        seed=a.seed,
        box=box,
        out=os.path.abspath(a.out),
        mask_folder=check_mask_folder(mask_folder, ds.test_ids[:n]),
    )


def _save_png(array: np.ndarray, path: str) -> dict:
    from PIL import Image

    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path, format="PNG")
    return {"sha256": sha256_file(path)}


def export(cfg: BenchConfig, command: Optional[list] = None) -> str:
    """Write the kit of ``cfg`` (its test images and masks) to ``cfg.out``; returns the path.
    Written beside ``cfg.out`` and renamed into place at the end: a failed export leaves nothing.
    """
    from bench.harness.rundir import run_masks
    from facefill_core.data import load_test_set

    ts = load_test_set(cfg.data, cfg.n_images, cfg.box)
    parent = os.path.dirname(cfg.out) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".kit-", dir=parent)
    try:
        images = []
        for i, (img, image_id) in enumerate(zip(ts.images, ts.ids)):
            f = f"images/{i:05d}.png"
            images.append({"index": i, "id": image_id, "file": f, **_save_png(img, os.path.join(tmp, f))})
        masks, mask_files = {}, []
        for mask in cfg.masks:
            holes = run_masks(cfg, mask)
            if mask == FOLDER:
                masks[mask] = {"kind": "folder", "folder": cfg.mask_folder}
            else:
                masks[mask] = {"kind": mask, "seed": cfg.seed}
            for i, h in enumerate(holes):
                f = f"masks/{mask}/{i:05d}.png"
                saved = _save_png((h * HOLE_VALUE).astype(np.uint8), os.path.join(tmp, f))
                mask_files.append({"mask": mask, "index": i, "file": f, "hole_fraction": float(h.mean()), **saved})
        manifest = {
            "format": KIT_FORMAT,
            "image_size": IMAGE_SIZE,
            "hole_value": HOLE_VALUE,
            "data": cfg.data,
            "data_metadata": ts.metadata,
            "box": list(ts.box),
            "box_override": list(cfg.box) if cfg.box else None,
            "n_images": cfg.n_images,
            "seed": cfg.seed,
            "preset": cfg.preset,
            "masks": masks,
            "images": images,
            "mask_files": mask_files,
            "predictions": "PREDICTIONS/<mask>/<index>.png",
            "command": command or ["python", "-m", "bench.export", *sys.argv[1:]],
            "created": dt.datetime.now().isoformat(timespec="seconds"),
        }
        write_json_atomic(os.path.join(tmp, "manifest.json"), manifest)
        with open(os.path.join(tmp, "README.md"), "w") as f:
            f.write(
                README.format(
                    n=cfg.n_images,
                    data=cfg.data,
                    size=IMAGE_SIZE,
                    masks=", ".join(cfg.masks),
                    last=cfg.n_images - 1,
                    box=tuple(ts.box),
                    first_mask=cfg.masks[0],
                )
            )
        if os.path.isdir(cfg.out):
            os.rmdir(cfg.out)  # empty (checked)
        os.replace(tmp, cfg.out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return cfg.out


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        cfg = build_config(argv)
        out = export(cfg, ["python", "-m", "bench.export", *argv])
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"kit: {out} ({cfg.n_images} images x {len(cfg.masks)} masks); what to produce: {out}/README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
