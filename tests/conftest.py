import numpy as np
import pytest
from skimage import data, transform


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
