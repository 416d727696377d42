"""Installing without root: the model from face-recognition-models when Debian's is absent, and the
extension built from dlib's PyPI sources (FACEFILL_DLIB=source) in a fresh virtual environment,
bit-identical to dlib's Python API."""

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from facefill_core import landmarks
from facefill_core.landmarks import MODEL_FILE, MODEL_SHA256, LandmarkPredictor, default_model_path

ROOT = Path(__file__).resolve().parents[1]
DEBIAN = Path("/usr/share/dlib") / MODEL_FILE
needs_package = pytest.mark.skipif(
    landmarks._package_model_path() is None, reason="face-recognition-models is not installed (the test extra has it)"
)


def test_model_dirs_searched_first(tmp_path, monkeypatch):
    (tmp_path / MODEL_FILE).write_bytes(b"x")
    assert default_model_path([str(tmp_path)]) == str(tmp_path / MODEL_FILE)
    monkeypatch.setenv("FACEFILL_DLIB_MODEL_DIRS", os.pathsep.join(["/nonexistent", str(tmp_path)]))
    assert default_model_path() == str(tmp_path / MODEL_FILE)


@needs_package
def test_model_from_package_when_debian_absent(monkeypatch):
    monkeypatch.setenv("FACEFILL_DLIB_MODEL_DIRS", "")  # set but empty: no system folder
    path = default_model_path()
    assert path.endswith(os.path.join("face_recognition_models", "models", MODEL_FILE))
    assert landmarks._sha256(path, os.path.getsize(path), os.stat(path).st_mtime_ns) == MODEL_SHA256
    assert LandmarkPredictor().model_path == path


@needs_package
@pytest.mark.skipif(not DEBIAN.is_file(), reason="no Debian libdlib-data to compare with")
def test_package_model_gives_debians_points(real_faces, monkeypatch):
    monkeypatch.setenv("FACEFILL_DLIB_MODEL_DIRS", "")
    ours = LandmarkPredictor(num_threads=1).predict(real_faces, rounded=False)
    deb = LandmarkPredictor(str(DEBIAN), num_threads=1).predict(real_faces, rounded=False)
    assert ours.tobytes() == deb.tobytes()


def test_model_missing_names_both_places(tmp_path, monkeypatch):
    monkeypatch.setattr(landmarks, "_package_model_path", lambda: None)
    with pytest.raises(
        FileNotFoundError,
        match=r"not at .*nope.*libdlib-data\), not in the face-recognition-models package \(pip install",
    ):
        default_model_path([str(tmp_path / "nope")])
    monkeypatch.setenv("FACEFILL_DLIB_MODEL_DIRS", "")
    with pytest.raises(FileNotFoundError, match=r"^dlib's 68-point model not found: not at any folder \(none given\)"):
        LandmarkPredictor()


def test_package_model_with_other_sha256_refused(tmp_path, monkeypatch):
    fake = tmp_path / MODEL_FILE
    fake.write_bytes(b"not dlib's model")
    monkeypatch.setattr(landmarks, "_package_model_path", lambda: str(fake))
    with pytest.raises(ValueError, match=r"has sha256 [0-9a-f]{16}\.\.\., expected dlib's model fbdc2cb80eb9aa7a"):
        default_model_path([])


def test_setup_rejects_unknown_dlib_choice(tmp_path):
    env = dict(os.environ, FACEFILL_DLIB="conda")
    r = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--build-temp", str(tmp_path), "--build-lib", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0
    assert "FACEFILL_DLIB must be one of auto, system, source, got 'conda'" in r.stderr


# ---- the build a user without root gets ---------------------------------------------------------
# A fresh venv (no pip of its own, so nothing is reinstalled: a .pth line puts this environment's
# site-packages behind its own, without running this environment's editable finder), facefill
# pip-installed into it from a copy of the sources with FACEFILL_DLIB=source, and the parity tests
# run there with the model taken from face-recognition-models (FACEFILL_DLIB_MODEL_DIRS empty).
# dlib's sdist is cached in FACEFILL_CACHE_DIR (default ~/.cache/facefill): only the first build
# downloads it.


@pytest.mark.slow
@needs_package
@pytest.mark.skipif(not shutil.which("g++") and not shutil.which("c++"), reason="no C++ compiler")
def test_source_build_in_fresh_venv_matches_dlib(tmp_path):
    src, venv, run = tmp_path / "src", tmp_path / "venv", tmp_path / "run"
    src.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md", "csrc", "facefill_core", "bench"):
        f = ROOT / name
        if f.is_dir():  # without the built extension: the build under test makes its own
            shutil.copytree(f, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
        else:
            shutil.copy(f, src / name)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run(
        [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "facefill_parent.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = dict(os.environ, FACEFILL_DLIB="source", FACEFILL_DLIB_MODEL_DIRS="", PYTHONNOUSERSITE="1")
    env.pop("PYTHONPATH", None)
    pip = [py, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "--no-index", "-v", str(src)]
    r = subprocess.run(pip, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "facefill: dlib 20.0.1 from source" in r.stdout + r.stderr  # the build said where dlib came from

    run.mkdir()
    for t in ("conftest.py", "test_landmarks_ext.py"):
        shutil.copy(ROOT / "tests" / t, run / t)
    probe = (
        "import facefill_core._landmarks as m, facefill_core.landmarks as l; "
        "print(m.__file__); print(l.default_model_path())"
    )
    r = subprocess.run([py, "-c", probe], cwd=run, env=env, capture_output=True, text=True, check=True)
    so, model = r.stdout.split()
    assert so.startswith(site), so  # the fresh build, not this environment's
    assert "face_recognition_models" in model
    ldd = subprocess.run(["ldd", so], capture_output=True, text=True).stdout
    assert "libdlib" not in ldd, ldd  # dlib compiled in, no system library
    r = subprocess.run(
        [py, "-m", "pytest", "-q", "-x", "-rs", "-p", "no:cacheprovider", "test_landmarks_ext.py"],
        cwd=run,
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout[-4000:]
    skips = [line for line in r.stdout.splitlines() if line.startswith("SKIPPED")]
    assert all("kernels not run: this CPU" in line for line in skips), skips  # only the ISAs this CPU lacks
    assert " passed" in r.stdout, r.stdout[-1000:]
