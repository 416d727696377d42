"""report.html: provenance, tables and images of a run, checked in headless Chromium."""

import csv
import json
import os
import re
import shutil
from html.parser import HTMLParser

import pytest

from bench.report import page as report_page
from bench.report.page import build_report_page, headless, provenance

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = os.path.join(ROOT, "results", "quick")
NO_CHROMIUM = "headless check needs Chromium (Debian: apt-get install chromium; make setup installs it)"


class _Tables(HTMLParser):
    """Every ``<table data-csv=NAME>``'s rows (cell texts) and ``<body>``'s attributes."""

    def __init__(self):
        super().__init__()
        self.tables, self.body, self._cur, self._row, self._cell = {}, {}, None, None, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body":
            self.body = a
        elif tag == "table":
            self._cur = a.get("data-csv") or a.get("data-table", "") + ":pivot"
            self.tables[self._cur] = []
        elif tag == "tr" and self._cur is not None:
            self._row = []
            self.tables[self._cur].append((a.get("class"), self._row))
        elif tag in ("td", "th") and self._row is not None:
            self._cell = ""

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(self._cell)
            self._cell = None
        elif tag == "table":
            self._cur = None


def _parse(page_html: str) -> _Tables:
    p = _Tables()
    p.feed(page_html)
    return p


@pytest.fixture(scope="module")
def quick_copy(tmp_path_factory):
    """results/quick copied (never written), its page rebuilt with 2 images per mask."""
    if not os.path.exists(os.path.join(QUICK, "records.jsonl")):
        pytest.skip("results/quick holds no run")
    d = str(tmp_path_factory.mktemp("page") / "quick")
    shutil.copytree(QUICK, d, ignore=shutil.ignore_patterns("report.html", "report.png", "png"))
    build_report_page(d, n_max=2)
    return d


def test_provenance_from_manifest_and_log(tmp_path):
    man = {
        "git_commit": "abc123",
        "git_dirty": True,
        "started": "2026-11-27T22:49:12",
        "versions": {"torch": "2.13.0", "numpy": "2.4.6", "ray": None},
        "machine": {"cpu_model": "AMD EPYC 7B13", "cpu_count": 2, "cuda_devices": [], "platform": "Linux"},
        "weights": {
            "si": {"kind": "dcgan", "sha256": "d" * 64},
            "si-ld": {"kind": "dcgan", "sha256": "d" * 64},
            "ce": {"kind": "ce", "sha256": "c" * 64},
        },
        "command": ["python", "-m", "bench.run", "--preset", "quick"],
    }
    (tmp_path / "manifest.json").write_text(json.dumps(man))
    (tmp_path / "run.log").write_text(
        "2026-11-27 22:49:12,795 INFO run x: 60 units\n2026-11-27 22:58:59,048 INFO unit done a\nno stamp\n"
        "2026-11-27 22:59:30,001 INFO finished\n"  # after the report: not the end, so a rebuild reads the same
    )
    p = dict(provenance(str(tmp_path)))
    assert p["commit"] == "abc123 (dirty (uncommitted changes))"
    assert p["weights (sha256)"] == f"ce {'c' * 64} (ce); dcgan {'d' * 64} (si, si-ld)"
    assert p["versions"] == "torch 2.13.0, numpy 2.4.6"  # an absent package is left out
    assert p["CPU"] == "AMD EPYC 7B13, 2 CPUs" and p["GPU"] == "none"
    assert p["start"] == "2026-11-27T22:49:12" and p["end (last unit finished)"] == "2026-11-27T22:58:59"
    assert p["duration"] == "9 min 47 s"
    assert p["command"] == "python -m bench.run --preset quick"
    man.update(git_dirty=False, finished="2026-11-28T00:49:13")
    (tmp_path / "manifest.json").write_text(json.dumps(man))
    p = dict(provenance(str(tmp_path)))
    assert p["commit"] == "abc123 (clean)" and p["duration"] == "2 h 00 min 01 s"
    os.remove(tmp_path / "manifest.json")
    p = dict(provenance(str(tmp_path)))  # an old run without a manifest: said, not guessed
    assert p["commit"] == "not recorded (tree state not recorded)" and p["GPU"] == "not recorded"


def test_page_holds_every_table_cell_and_the_thesis_rows(quick_copy):
    with open(os.path.join(quick_copy, "report.html"), encoding="utf-8") as f:
        page = f.read()
    tables = _parse(page).tables
    names = sorted(n[:-4] for n in os.listdir(os.path.join(quick_copy, "tables")) if n.endswith(".csv"))
    assert names and all(n in tables for n in names)
    for n in names:
        with open(os.path.join(quick_copy, "tables", f"{n}.csv"), newline="") as f:
            want = list(csv.reader(f))
        assert [cells for _, cells in tables[n]] == want, n  # the CSV cell for cell
    psnr = {row[0]: (cls, row[1:]) for cls, row in tables["psnr:pivot"]}
    with open(os.path.join(quick_copy, "tables", "psnr.csv"), newline="") as f:
        first = next(csv.DictReader(f))
    head = [c for _, c in tables["psnr:pivot"]][0]
    cell = psnr[first["method"]][1][head.index(first["mask"]) - 1]
    assert cell == f"{float(first['mean']):.2f} ± {float(first['ci95_half_width']):.2f}"
    thesis = {k: v for k, v in psnr.items() if k.endswith("(thesis, CelebA)")}
    assert set(thesis) == {
        "SI (thesis, CelebA)",
        "Ours (thesis, CelebA)",
        "CE (thesis, CelebA)",
        "GFC (thesis, CelebA)",
    }
    assert all(cls == "thesis" for cls, _ in thesis.values())
    assert thesis["SI (thesis, CelebA)"][1][head.index("centre") - 1] == "19.4"  # the thesis's Table 1
    assert "http://" not in page and "https://" not in page  # nothing from the network


def test_page_shows_every_method_per_image(quick_copy):
    with open(os.path.join(quick_copy, "report.html"), encoding="utf-8") as f:
        page = f.read()
    recs = [json.loads(line) for line in open(os.path.join(quick_copy, "records.jsonl"))]
    methods = sorted({r["method"] for r in recs})
    masks = sorted({r["mask"] for r in recs})
    for mask in masks:
        for i in range(2):
            m = re.search(rf'<div class="cells" data-image="{i}" data-mask="{mask}">(.*?)</div>\s*\n', page, re.S)
            assert m, (mask, i)
            alts = re.findall(r'alt="([^"]+)"', m.group(1))
            assert alts[:2] == [f"original {i}", f"mask {mask} {i}"]
            assert sorted(alts[2:]) == sorted(f"{x} {mask} {i}" for x in methods)
            r = next(r for r in recs if r["method"] == methods[0] and r["mask"] == mask and r["image_index"] == i)
            assert f"PSNR {r['psnr']:.2f} dB" in m.group(1)
            assert m.group(1).count("<circle") == 2 * 68 * len(methods)  # original + result points per method
    assert '<div class="cells" data-image="2"' not in page  # n_max=2


def _check_in_chromium(page):
    r = headless(page, "--dump-dom")
    console = [line for line in r.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console  # the page logs nothing: no script error, no blocked request
    body = _parse(r.stdout).body
    total = int(body["data-images-total"])
    assert total > 0 and body["data-images-failed"] == "0" and int(body["data-images-loaded"]) == total
    return total


@pytest.mark.skipif(report_page.chromium() is None, reason=NO_CHROMIUM)
def test_page_loads_in_headless_chromium(quick_copy):
    n_fig = len([f for f in os.listdir(os.path.join(quick_copy, "figures")) if f.endswith(".png")])
    recs = [json.loads(line) for line in open(os.path.join(quick_copy, "records.jsonl"))]
    cells = len({(r["method"], r["mask"]) for r in recs})
    masks = len({r["mask"] for r in recs})
    total = _check_in_chromium(os.path.join(quick_copy, "report.html"))
    assert total == n_fig + 2 * (cells + 2 * masks)  # figures + (methods, original, mask) x 2 images x masks
    shot = os.path.join(quick_copy, "shot.png")
    report_page.screenshot(os.path.join(quick_copy, "report.html"), shot, height=900)
    assert os.path.getsize(shot) > 20000


@pytest.mark.skipif(report_page.chromium() is None, reason=NO_CHROMIUM)
def test_a_broken_image_is_reported(tmp_path):
    """The check itself: a missing figure and a network image fail it."""
    (tmp_path / "figures").mkdir()
    page = tmp_path / "report.html"
    page.write_text(
        f'<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" content="{report_page.CSP}">'
        '</head><body><img src="figures/missing.png"><script>' + report_page.SCRIPT + "</script></body></html>"
    )
    r = headless(str(page), "--dump-dom")
    assert _parse(r.stdout).body["data-images-failed"] == "1"
    page.write_text(page.read_text().replace("figures/missing.png", "http://127.0.0.1:9/x.png"))
    with pytest.raises(AssertionError):
        _check_in_chromium(str(page))


@pytest.mark.skipif(report_page.chromium() is None, reason=NO_CHROMIUM)
def test_committed_quick_page_loads(tmp_path):
    if not os.path.exists(os.path.join(QUICK, "report.html")):
        pytest.skip("results/quick/report.html not generated yet (python -m bench.report results/quick)")
    _check_in_chromium(os.path.join(QUICK, "report.html"))


def test_cli_errors(tmp_path, capsys):
    assert report_page.main([str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'nope'} is not a run directory"
    assert report_page.main([str(tmp_path), "--max-images", "-1"]) == 2
    assert capsys.readouterr().err.strip() == "error: --max-images must be >= 0, got -1"
