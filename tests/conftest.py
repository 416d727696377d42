"""Shared fixtures and the ``gpu`` marker's skip logic. What the suite promises, file by file, and
what a green run means: tests/README.md.

The test process runs under the pinned-numerics environment (bench.harness.numerics.PINNED_ENV), set
here before numpy or torch load, as ``python -m bench.run`` sets it before re-executing itself:
an in-process run in a test and a run in a subprocess (or a Ray worker) then take the same
arithmetic path and give the same records bit for bit."""

import os

from bench.harness.numerics import PINNED_ENV

for _k, _v in PINNED_ENV.items():
    os.environ.setdefault(_k, _v)

import numpy as np  # noqa: E402  (after the environment above)
import pytest  # noqa: E402
from skimage import data, transform  # noqa: E402


def _cuda_reason() -> "str | None":
    """Why the ``gpu`` tests cannot run here, or None when CUDA is usable."""
    import torch

    if not torch.backends.cuda.is_built():
        return f"needs CUDA: torch {torch.__version__} is a CPU-only build"
    if not torch.cuda.is_available():
        return "needs CUDA: no CUDA device is visible"
    return None


def pytest_collection_modifyitems(config, items):
    """``gpu`` tests run wherever CUDA exists and are reported as skipped, with the reason,
    where it does not."""
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items:
        return
    reason = _cuda_reason()
    if reason is not None:
        for item in gpu_items:
            item.add_marker(pytest.mark.skip(reason=reason))


def _to_u8(img):
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def real_faces() -> np.ndarray:
    """Real faces from scikit-image: LFW's 25x25 faces upscaled to 64x64, and the astronaut's
    face cropped and resized, as uint8 (N, 64, 64, 3)."""
    lfw = data.lfw_subset()[:48]
    faces = [np.repeat(_to_u8(transform.resize(f, (64, 64), order=1))[..., None], 3, axis=2) for f in lfw]
    astro = data.astronaut()[20:220, 140:340]  # her face, roughly square
    faces.append(_to_u8(transform.resize(astro, (64, 64), order=1, anti_aliasing=True)))
    return np.ascontiguousarray(np.stack(faces))


@pytest.fixture(scope="session")
def predictor():
    from facefill_core.landmarks import LandmarkPredictor

    return LandmarkPredictor()


@pytest.fixture(autouse=True, scope="module")
def _cheap_judges(request):
    """Runs started through the command line (``--metrics all``, the default) compute only the
    cheap hole-only judge in tests, so that every small run does not load the FaceNet and
    Inception graphs (~180 MB, seconds per run). ``tests/test_judges.py`` runs every judge,
    end to end included. Module-scoped and autouse, so it is in place before any module-scoped
    run fixture is built."""
    if request.module.__name__.endswith("test_judges"):
        yield
        return
    import facefill_core.judges as judges

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(judges, "DEFAULT_JUDGES", ("hole",))
        yield
