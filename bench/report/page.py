"""``report.html``: one page per run directory, written by :func:`bench.report.tables.build_report`.
Nothing from the network (a Content-Security-Policy forbids it): the per-image thumbnails are
embedded as ``data:`` URIs and the figures are the run's own ``figures/*.png`` beside the page
(``--embed-figures``: embedded too, for a page that travels alone).

It holds, from the run directory alone:

* the run's provenance (:func:`provenance`): command, commit and whether the tree was dirty,
  weights (sha256), package versions, CPU and GPUs, start, end and duration;
* every table of ``tables/*.csv`` (whatever its columns): per metric a method x mask view
  (``mean ± ci95_half_width``) with the thesis's published rows labelled ``(thesis, CelebA)``,
  and each CSV as it is, cell for cell;
* every figure of ``figures/*.png``;
* a per-image view: per mask and test image, the original, the mask, every method's completion
  with its PSNR, SSIM and NME, and dlib's landmarks of the original (green) and of the result
  (red) drawn over each completion (a checkbox hides them).

``python -m bench.report.page RUN_DIR [--screenshot PNG]`` rebuilds the page alone and, with
``--screenshot``, renders it in headless Chromium (:func:`screenshot`). The page sets
``data-images-loaded``, ``data-images-total`` and ``data-images-failed`` on ``<body>`` once
every image has loaded or failed, for a headless check.
"""

from __future__ import annotations

import argparse
import base64
import csv
import datetime as dt
import html
import io
import json
import os
import re
import shutil
import subprocess
import sys
from typing import Optional, Sequence

import numpy as np

from bench.report.figures import HOLE_RGB

MAX_IMAGES = 16  # per-image view: the first images of the run (the page stays a few MB)
TABLE_ORDER = ("psnr", "ssim", "nme", "scale", "scale_regions", "seconds", "thesis_reference")
POINT_COLOURS = {"original": "#00c000", "result": "#ff2020"}
# nothing from the network: images are data: URIs or the run's own figures/ beside the page
CSP = "default-src 'none'; img-src data: 'self' file:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;max-width:1600px}
h1{font-size:1.5em} h2{font-size:1.25em;border-bottom:1px solid #ccc;margin-top:1.6em} h3{font-size:1.05em}
table{border-collapse:collapse;margin:.5em 0 1em} td,th{border:1px solid #ccc;padding:2px 7px;text-align:right}
th{background:#f2f2f2} td:first-child,th:first-child{text-align:left}
tr.thesis td{background:#fff6dd;font-style:italic}
dl.prov{display:grid;grid-template-columns:max-content auto;gap:2px 14px} dl.prov dt{font-weight:600}
code{font-size:12px} img.fig{max-width:100%;border:1px solid #ddd;margin:4px 0}
.cells{display:flex;flex-wrap:wrap;gap:6px;margin:4px 0 12px}
.cell{width:136px;font-size:11px;text-align:center}
.thumb{position:relative;width:128px;height:128px;margin:auto}
.thumb img{width:128px;height:128px;image-rendering:pixelated;display:block}
.thumb svg{position:absolute;left:0;top:0;width:128px;height:128px}
body.nopoints .thumb svg{display:none}
.key span{display:inline-block;width:10px;height:10px;margin:0 4px 0 12px;vertical-align:middle}
"""

SCRIPT = """
(function(){
  var imgs=Array.prototype.slice.call(document.images), left=imgs.length, failed=0;
  function done(){ document.body.dataset.imagesTotal=imgs.length;
    document.body.dataset.imagesFailed=failed; document.body.dataset.imagesLoaded=imgs.length-failed; }
  function one(img){ if(!(img.complete&&img.naturalWidth>0)) failed++; if(--left===0) done(); }
  if(!left) done();
  imgs.forEach(function(img){
    if(img.complete){ one(img); }
    else { img.addEventListener('load',function(){one(img)}); img.addEventListener('error',function(){one(img)}); }
  });
  var box=document.getElementById('points');
  if(box) box.addEventListener('change',function(){ document.body.classList.toggle('nopoints',!box.checked); });
})();
"""


# -- provenance ------------------------------------------------------------------------------
def _log_times(run_dir: str) -> tuple[Optional[str], Optional[str]]:
    """(first line, last finished unit) timestamps of ``run.log`` as ISO strings (the last line
    when no unit is logged); None without a log. The end is the last unit's, not the log's last
    line, so a report rebuilt later reads the same."""
    p = os.path.join(run_dir, "run.log")
    if not os.path.exists(p):
        return None, None
    stamps, units = [], []
    with open(p) as f:
        for line in f:
            m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", line)
            if m:
                stamps.append(m.group(1).replace(" ", "T"))
                if " unit done " in line:
                    units.append(stamps[-1])
    if not stamps:
        return None, None
    return stamps[0], (units or stamps)[-1]


def _duration(start: Optional[str], end: Optional[str]) -> Optional[str]:
    try:
        s = (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()
    except (TypeError, ValueError):
        return None
    h, rem = divmod(int(round(s)), 3600)
    return f"{h} h {rem // 60:02d} min {rem % 60:02d} s" if h else f"{rem // 60} min {rem % 60:02d} s"


def provenance(run_dir: str) -> list[tuple[str, str]]:
    """(field, value) pairs of what ran, from ``manifest.json`` and ``run.log``; a field the
    manifest lacks (an older run) reads "not recorded". The same list opens ``tables.md``."""
    p = os.path.join(run_dir, "manifest.json")
    man = json.load(open(p)) if os.path.exists(p) else {}
    nr = "not recorded"
    machine = man.get("machine", {})
    commit = man.get("git_commit")
    dirty = man.get("git_dirty")
    state = "tree state not recorded" if dirty is None else ("dirty (uncommitted changes)" if dirty else "clean")
    first, last = _log_times(run_dir)
    start = man.get("started") or first
    end = man.get("finished") or last
    weights = {}
    for method, w in sorted(man.get("weights", {}).items()):
        key = (w.get("kind"), w.get("sha256"))
        weights.setdefault(key, []).append(method)
    wtext = (
        "; ".join(f"{k} {sha} ({', '.join(ms)})" for (k, sha), ms in weights.items()) or "none (no trained model ran)"
    )
    versions = man.get("versions", {})
    vtext = ", ".join(f"{k} {v}" for k, v in versions.items() if v) or nr
    cpu = machine.get("cpu_model") or machine.get("processor") or nr
    if machine.get("cpu_count") is not None:
        cpu += f", {machine['cpu_count']} CPUs"
    gpus = machine.get("cuda_devices")
    gtext = nr if gpus is None else (", ".join(gpus) if gpus else "none")
    cmd = man.get("command")
    return [
        ("command", " ".join(cmd) if cmd else nr),
        ("commit", f"{commit or nr} ({state})"),
        ("weights (sha256)", wtext),
        ("versions", vtext),
        ("CPU", cpu),
        ("GPU", gtext),
        ("platform", machine.get("platform") or nr),
        ("start", start or nr),
        ("end (last unit finished)", end or nr),
        ("duration", _duration(start, end) or nr),
    ]


def provenance_markdown(run_dir: str) -> list[str]:
    """:func:`provenance` as markdown lines for the head of ``tables.md``."""
    return ["Provenance:", ""] + [f"- {k}: {v}" for k, v in provenance(run_dir)] + [""]


# -- tables ----------------------------------------------------------------------------------
def read_tables(run_dir: str) -> list[tuple[str, list[str], list[list[str]]]]:
    """Every ``tables/*.csv``: (name, header, rows), the known tables first."""
    d = os.path.join(run_dir, "tables")
    names = sorted(f[:-4] for f in os.listdir(d) if f.endswith(".csv")) if os.path.isdir(d) else []
    names = [n for n in TABLE_ORDER if n in names] + [n for n in names if n not in TABLE_ORDER]
    out = []
    for n in names:
        with open(os.path.join(d, f"{n}.csv"), newline="") as f:
            rows = list(csv.reader(f))
        if rows:
            out.append((n, rows[0], rows[1:]))
    return out


def _esc(x) -> str:
    return html.escape(str(x), quote=True)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], classes: Sequence[str] = (), attrs: str = "") -> str:
    h = "".join(f"<th>{_esc(c)}</th>" for c in header)
    body = []
    for i, r in enumerate(rows):
        cls = f' class="{classes[i]}"' if i < len(classes) and classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{_esc(c)}</td>" for c in r) + "</tr>")
    return f"<table{attrs}><thead><tr>{h}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _pivot(name: str, header: list[str], rows: list[list[str]], thesis: dict) -> Optional[str]:
    """A long table with ``method, mask, mean[, ci95_half_width]`` as method x mask cells, the
    thesis's rows for this metric appended; None for other shapes."""
    value = "mean" if "mean" in header else next((c for c in header if c not in ("method", "mask")), None)
    if not {"method", "mask"} <= set(header) or value is None or "region" in header:
        return None
    ix = {c: header.index(c) for c in header}
    methods = list(dict.fromkeys(r[ix["method"]] for r in rows))
    masks = list(dict.fromkeys(r[ix["mask"]] for r in rows))
    cells = {}
    for r in rows:
        mean = r[ix[value]]
        half = r[ix["ci95_half_width"]] if "ci95_half_width" in ix else ""
        try:
            digits = 2 if name == "psnr" else 3 if name == "seconds" else 4
            text = f"{float(mean):.{digits}f}"
            if half and np.isfinite(float(half)):
                text += f" ± {float(half):.{digits}f}"
        except ValueError:
            text = mean
        cells[(r[ix["method"]], r[ix["mask"]])] = text
    body = [[m] + [cells.get((m, k), "") for k in masks] for m in methods]
    classes = [""] * len(body)
    for label, vals in thesis.items():
        if name in vals:
            body.append([label] + [f"{vals[name][k]:g}" if k in vals[name] else "" for k in masks])
            classes.append("thesis")
    return _table(["method"] + masks, body, classes, attrs=f' class="pivot" data-table="{_esc(name)}"')


def tables_html(run_dir: str) -> str:
    from bench.report.tables import thesis_rows

    thesis = thesis_rows()
    parts = []
    for name, header, rows in read_tables(run_dir):
        parts.append(f"<h3>{_esc(name)}</h3>")
        piv = _pivot(name, header, rows, thesis)
        if piv:
            parts.append(piv)
        raw = _table(header, rows, attrs=f' class="raw" data-csv="{_esc(name)}"')
        if piv:
            parts.append(f"<details><summary>tables/{_esc(name)}.csv as written</summary>{raw}</details>")
        else:
            classes = ["thesis" if "thesis" in " ".join(r) else "" for r in rows]
            raw = _table(header, rows, classes, attrs=f' class="raw" data-csv="{_esc(name)}"')
            if len(rows) > 24:  # a long table opens on a click
                raw = f"<details><summary>tables/{_esc(name)}.csv ({len(rows)} rows)</summary>{raw}</details>"
            parts.append(raw)
    if thesis:
        from bench.report.tables import REFERENCE_NOTE

        parts.append(f"<p>{_esc(REFERENCE_NOTE)}</p>")
    return "\n".join(parts) or "<p>No tables.</p>"


# -- images ----------------------------------------------------------------------------------
def png_data_uri(img: np.ndarray) -> str:
    """A uint8 ``(H, W, 3)`` image as a ``data:image/png;base64,...`` URI."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img)).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def file_data_uri(path: str) -> str:
    with open(path, "rb") as f:
        return "data:image/png;base64," + base64.b64encode(f.read()).decode("ascii")


def figures_html(run_dir: str, embed: bool = False) -> str:
    """The run's figures: ``<img src="figures/...">`` beside the page, or embedded (``embed``)."""
    d = os.path.join(run_dir, "figures")
    names = sorted(f for f in os.listdir(d) if f.endswith(".png")) if os.path.isdir(d) else []
    if not names:
        return "<p>No figures.</p>"
    src = (lambda n: file_data_uri(os.path.join(d, n))) if embed else (lambda n: f"figures/{_esc(n)}")
    return "\n".join(
        f'<figure><img class="fig" alt="{_esc(n)}" src="{src(n)}">'
        f"<figcaption><code>figures/{_esc(n)}</code></figcaption></figure>"
        for n in names
    )


def _points_svg(sets: Sequence[tuple[str, np.ndarray]], size: int) -> str:
    circles = []
    for name, xy in sets:
        colour = POINT_COLOURS[name]
        circles += [
            f'<circle cx="{x + 0.5:.2f}" cy="{y + 0.5:.2f}" r="0.9" fill="{colour}" stroke="#000" stroke-width="0.25"/>'
            for x, y in np.asarray(xy)
            if np.isfinite(x) and np.isfinite(y)
        ]
    return f'<svg viewBox="0 0 {size} {size}" aria-hidden="true">{"".join(circles)}</svg>'


def _cell(uri: str, caption: str, alt: str, svg: str = "") -> str:
    return f'<div class="cell"><div class="thumb"><img alt="{_esc(alt)}" src="{uri}">{svg}</div>{caption}</div>'


def per_image_html(run_dir: str, records: list[dict], methods: Sequence[str], masks: Sequence[str], n_max: int) -> str:
    """Per mask and image: original, mask, each method's completion with its metrics and points."""
    from bench.report.figures import (
        _box,
        _manifest,
        _record_index,
        landmark_points,
        load_holes,
        load_originals,
        method_outputs,
        paint_holes,
    )

    n_run = 1 + max((r["image_index"] for r in records), default=-1)
    n = min(n_max, n_run)
    originals = load_originals(run_dir, n) if n else None
    if originals is None:
        return "<p>No per-image view: the run directory has no manifest to load its images from.</p>"
    box = _box(_manifest(run_dir))
    rec = _record_index(records)  # seed replicate 0: the outputs drawn
    ids = {r["image_index"]: r.get("image_id", str(r["image_index"])) for r in records}
    parts = [
        f"<p>The first {n} of the run's {n_run} images. Landmarks (dlib, 68 points): "
        '<span class="key"><span style="background:#00c000"></span>original'
        '<span style="background:#ff2020"></span>result</span>. '
        f"Hole colour: rgb{HOLE_RGB}. "
        '<label><input type="checkbox" id="points" checked> show landmarks</label></p>'
    ]
    size = originals.shape[1]
    for mask in masks:
        holes = load_holes(run_dir, mask, n, originals.shape[1:3])
        outs = {m: method_outputs(run_dir, m, mask, n, originals) for m in methods}
        try:
            pts = landmark_points(originals, holes, outs, box)
        except Exception:  # noqa: BLE001  (no extension built: the page still shows the images)
            pts = None
        masked = paint_holes(originals, holes)
        parts.append(f'<h3 id="mask-{_esc(mask)}">mask: {_esc(mask)}</h3>')
        for i in range(n):
            cells = [
                _cell(png_data_uri(originals[i]), f"original<br>{_esc(ids.get(i, i))}", f"original {i}"),
                _cell(png_data_uri(masked[i]), f"mask<br>hole {holes[i].mean():.0%}", f"mask {mask} {i}"),
            ]
            for m in methods:
                r = rec.get((m, mask, i))
                if r is None:
                    continue
                nme = r.get("nme")
                cap = (
                    f"<b>{_esc(m)}</b><br>PSNR {r['psnr']:.2f} dB<br>SSIM {r['ssim']:.4f}<br>"
                    f"NME {'failed' if nme is None else f'{nme:.4f}'}"
                )
                svg = ""
                if pts is not None:
                    svg = _points_svg([("original", pts["original"][i]), ("result", pts[m][i])], size)
                cells.append(_cell(png_data_uri(outs[m][i]), cap, f"{m} {mask} {i}", svg))
            parts.append(f'<div class="cells" data-image="{i}" data-mask="{_esc(mask)}">{"".join(cells)}</div>')
    return "\n".join(parts)


# -- the page --------------------------------------------------------------------------------
def build_report_page(
    run_dir: str,
    records: Optional[list[dict]] = None,
    methods=None,
    masks=None,
    n_max: int = MAX_IMAGES,
    embed_figures: bool = False,
) -> str:
    """Write ``report.html`` in ``run_dir`` (atomically) and return its path. The figures are
    read from ``figures/`` beside the page (the run directory's own files; ``embed_figures``:
    copied in as ``data:`` URIs, for a page that travels alone), every other image is embedded."""
    from bench.report.tables import aggregate, load_records

    records = load_records(run_dir) if records is None else records
    if methods is None or masks is None:
        methods, masks, _ = aggregate(records)
    prov = "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in provenance(run_dir))
    title = f"facefill run {os.path.basename(os.path.abspath(run_dir))}"
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<title>{_esc(title)}</title><style>{STYLE}</style></head>
<body>
<h1>{_esc(title)}</h1>
<p>{len(records)} records: {len(methods)} methods x {len(masks)} masks. Cells: mean ± half-width of the 95%
confidence interval (see <code>tables.md</code>).</p>
<h2 id="provenance">Provenance</h2><dl class="prov">{prov}</dl>
<h2 id="tables">Tables</h2>
{tables_html(run_dir)}
<h2 id="figures">Figures</h2>
{figures_html(run_dir, embed_figures)}
<h2 id="images">Per image</h2>
{per_image_html(run_dir, records, methods, masks, n_max)}
<script>{SCRIPT}</script>
</body></html>
"""
    path = os.path.join(run_dir, "report.html")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(page)
    os.replace(tmp, path)
    return path


# -- headless Chromium -----------------------------------------------------------------------
def chromium() -> Optional[str]:
    """The path of a Chromium executable (Debian's ``chromium``), None when absent."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        p = shutil.which(name)
        if p:
            return p
    return None


def headless(page: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run headless Chromium on a local page with ``args`` (``--dump-dom``, ``--screenshot=...``);
    console messages go to stderr (``--enable-logging=stderr``).

    Raises:
        FileNotFoundError: no Chromium is installed.
    """
    exe = chromium()
    if exe is None:
        raise FileNotFoundError("chromium is not installed (Debian: apt-get install chromium)")
    import tempfile

    with tempfile.TemporaryDirectory(prefix="facefill-chromium-") as profile:
        cmd = [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=20000",
            *args,
            "file://" + os.path.abspath(page),
        ]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def screenshot(page: str, png: str, width: int = 1400, height: int = 2200) -> str:
    """A PNG of the page's first ``height`` pixels in headless Chromium; returns ``png``."""
    r = headless(page, f"--screenshot={os.path.abspath(png)}", f"--window-size={width},{height}")
    if not os.path.exists(png):
        raise RuntimeError(f"chromium wrote no screenshot (exit {r.returncode}): {r.stderr[-500:]}")
    return png


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.report.page", description=__doc__.split("\n")[0])
    p.add_argument("run_dir")
    p.add_argument("--screenshot", metavar="PNG", help="also render the page to PNG in headless Chromium")
    p.add_argument("--max-images", type=int, default=MAX_IMAGES, help="images in the per-image view")
    p.add_argument("--embed-figures", action="store_true", help="embed figures/*.png (a page that travels alone)")
    a = p.parse_args(argv)
    if not os.path.isdir(a.run_dir):
        print(f"error: {a.run_dir} is not a run directory", file=sys.stderr)
        return 2
    if a.max_images < 0:
        print(f"error: --max-images must be >= 0, got {a.max_images}", file=sys.stderr)
        return 2
    try:
        path = build_report_page(a.run_dir, n_max=a.max_images, embed_figures=a.embed_figures)
    except (ValueError, KeyError, OSError) as e:
        print(f"error: {a.run_dir}: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    print(path)
    if a.screenshot:
        try:
            print(screenshot(path, a.screenshot))
        except (FileNotFoundError, RuntimeError) as e:
            print(f"error: --screenshot: {e}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
