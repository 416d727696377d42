"""Builds the C++ landmark extension `facefill_core._landmarks` on dlib.

dlib comes from one of two places:
  system  the system's dlib (Debian's libdlib-dev: headers, libdlib.so, BLAS and LAPACK);
  source  dlib's own C++ sources from its released source distribution on PyPI (dlib==DLIB_VERSION,
          checked against DLIB_SHA256): the headers, plus the three .cpp files the extension needs
          (base64 and the entropy decoder for the HOG face detector's embedded model, and dlib's
          build-consistency symbols), compiled into the extension with the same flags. Needs no
          root and no system package beyond a C++17 compiler.
The shape predictor and the model format are the same in both (the parity tests compare every
point with dlib's Python API, bit for bit).

The batch's hot loops (csrc/kernels_*.cpp: leaf additions, tree walk, feature-pixel positions)
are compiled once per instruction set (SSE2, AVX2, AVX-512F, via `#pragma GCC target`) and picked
at run time, so the default build is portable and uses the widest vectors the CPU has.
-ffp-contract=off: no fused multiply-adds anywhere, so every float operation rounds as in dlib
(bit-identical points is the contract).

Environment:
  FACEFILL_DLIB=auto|system|source  where dlib comes from (auto, the default: system when a
                     program including dlib's headers links against -ldlib, else source).
  FACEFILL_BLAS=0|1|auto  source builds only: dlib's own code for the few small matrix products
                     and 2x2 SVDs the predictor needs (0, the default: as the dlib-bin wheel is
                     built, and faster here than a LAPACK call per 2x2 SVD), the system's BLAS/LAPACK
                     (-lblas -llapack, as Debian's dlib does: 1), or the system's when they link (auto).
  FACEFILL_DLIB_SDIST=path  a dlib-DLIB_VERSION.tar.gz already on disk (offline builds); else it
                     is downloaded once with `pip download` into the cache folder.
  FACEFILL_CACHE_DIR  the cache folder (default $XDG_CACHE_HOME/facefill or ~/.cache/facefill):
                     the checked sdist and its unpacked tree live there, shared by every build.
  FACEFILL_BUILD_JOBS=N  compile N files at once (default 0: one per CPU).
  FACEFILL_NATIVE=1  add -march=native (off by default so the build is portable across x86-64
                     machines).
"""

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from glob import glob

from pybind11.setup_helpers import ParallelCompile, Pybind11Extension, build_ext
from setuptools import setup

DLIB_VERSION = "20.0.1"
DLIB_SHA256 = "7cb2a09467de032332c743bc967007f016598c66c9c9ebc54a5b66d3d9e46d54"
# The only dlib symbols the extension needs from a compiled dlib (everything else is in headers).
DLIB_SOURCES = (
    "dlib/base64/base64_kernel_1.cpp",
    "dlib/entropy_decoder/entropy_decoder_kernel_2.cpp",
    "dlib/test_for_odr_violations.cpp",
)

extra = ["-O3", "-ffp-contract=off", "-DNDEBUG", "-DDLIB_NO_GUI_SUPPORT"]
if os.environ.get("FACEFILL_NATIVE") == "1":
    extra.append("-march=native")
# The landmark batch's threads are OpenMP threads, from the same runtime as torch's where both
# load libgomp.so.1 (Linux with GCC); elsewhere csrc/dispatch.cpp starts its own std::threads.
openmp = ["-fopenmp"] if sys.platform.startswith("linux") else []


def _say(msg: str) -> None:
    print(f"facefill: {msg}", file=sys.stderr, flush=True)


def _choice(name: str, allowed: tuple, default: str) -> str:
    value = os.environ.get(name, default) or default
    if value not in allowed:
        sys.exit(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _cache_dir() -> str:
    d = os.environ.get("FACEFILL_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "facefill"
    )
    os.makedirs(d, exist_ok=True)
    return d


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _dlib_sdist(cache: str) -> str:
    """The checked dlib sdist: FACEFILL_DLIB_SDIST, the cached copy, or a fresh `pip download`."""
    name = f"dlib-{DLIB_VERSION}.tar.gz"
    given = os.environ.get("FACEFILL_DLIB_SDIST")
    path = os.path.abspath(given) if given else os.path.join(cache, name)
    if not given and not os.path.isfile(path):
        _say(f"downloading dlib=={DLIB_VERSION}'s source distribution from PyPI into {cache}")
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            cmd = [
                sys.executable,
                "-m",
                "pip",
                "download",
                f"dlib=={DLIB_VERSION}",
                "--no-binary",
                ":all:",
                "--no-deps",
                "--quiet",
                "-d",
                tmp,
            ]
            # --no-build-isolation spares pip a build environment just to read the sdist's metadata
            ok = subprocess.run(cmd + ["--no-build-isolation"]).returncode == 0 or subprocess.run(cmd).returncode == 0
            if not ok or not os.path.isfile(os.path.join(tmp, name)):
                sys.exit(
                    f"could not download dlib=={DLIB_VERSION} from PyPI; download {name} and set FACEFILL_DLIB_SDIST"
                )
            os.replace(os.path.join(tmp, name), path)
    if not os.path.isfile(path):
        sys.exit(f"FACEFILL_DLIB_SDIST={given}: no such file")
    got = _sha256(path)
    if got != DLIB_SHA256:
        sys.exit(f"{path}: sha256 {got}, expected dlib {DLIB_VERSION}'s {DLIB_SHA256}")
    return path


def _dlib_tree(cache: str) -> str:
    """dlib's unpacked source tree (the folder holding dlib/), unpacked once into the cache."""
    root = os.path.join(cache, f"dlib-{DLIB_VERSION}")
    if os.path.isfile(os.path.join(root, ".facefill-complete")):
        return root
    sdist = _dlib_sdist(cache)
    tmp = tempfile.mkdtemp(dir=cache)
    try:
        with tarfile.open(sdist) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(f"dlib-{DLIB_VERSION}/dlib/")]
            kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(tmp, members=members, **kw)
        open(os.path.join(tmp, f"dlib-{DLIB_VERSION}", ".facefill-complete"), "w").close()
        if os.path.isdir(root) and not os.path.isfile(os.path.join(root, ".facefill-complete")):
            shutil.rmtree(root)  # an unpacked tree from elsewhere; ours are renamed in whole
        try:
            os.rename(os.path.join(tmp, f"dlib-{DLIB_VERSION}"), root)
        except OSError:  # a concurrent build renamed its (identical) tree first: use that one
            if not os.path.isfile(os.path.join(root, ".facefill-complete")):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


class BuildExt(build_ext):
    """build_ext that picks dlib's source (system or PyPI) before compiling."""

    def _links(self, code: str, libraries: list, macros: list = (), include_dirs: list = ()) -> bool:
        """Whether `code` compiles and links as a program with these libraries."""
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "probe.cpp")
            with open(src, "w") as f:
                f.write(code)
            try:
                with open(os.devnull, "w") as null:  # the probe's expected failures are noise
                    saved = os.dup(2)
                    os.dup2(null.fileno(), 2)
                    try:
                        objs = self.compiler.compile(
                            [src],
                            output_dir=tmp,
                            macros=list(macros),
                            include_dirs=list(include_dirs),
                            extra_postargs=["-std=c++17"],
                        )
                        self.compiler.link_executable(
                            objs, "probe", output_dir=tmp, libraries=libraries, target_lang="c++"
                        )
                    finally:
                        os.dup2(saved, 2)
                        os.close(saved)
            except Exception:
                return False
        return True

    def build_extensions(self):
        mode = _choice("FACEFILL_DLIB", ("auto", "system", "source"), "auto")
        if mode == "auto":
            has = self._links(
                "#include <dlib/base64.h>\nint main() { dlib::base64 b; return 0; }\n", ["dlib", "blas", "lapack"]
            )
            mode = "system" if has else "source"
            if has:
                _say(f"dlib: the system's (FACEFILL_DLIB=source builds dlib {DLIB_VERSION} from PyPI sources instead)")
            else:
                _say(f"dlib: none on the system; building dlib {DLIB_VERSION} from its PyPI sources")
        for ext in self.extensions:
            if mode == "system":
                ext.libraries += ["dlib", "blas", "lapack"]
                continue
            root = _dlib_tree(_cache_dir())
            ext.include_dirs.insert(0, root)  # before /usr/include, which may hold another dlib
            ext.sources += [os.path.join(root, s) for s in DLIB_SOURCES]
            ext.define_macros += [("DLIB_DISABLE_ASSERTS", None)]
            blas = _choice("FACEFILL_BLAS", ("0", "1", "auto"), "0")
            if blas == "auto":
                blas = (
                    "1"
                    if self._links(
                        'extern "C" void cblas_dgemm(); extern "C" void dgesvd_();\n'
                        "int main() { cblas_dgemm(); dgesvd_(); return 0; }\n",
                        ["blas", "lapack"],
                    )
                    else "0"
                )
            if blas == "1":
                ext.define_macros += [
                    ("DLIB_USE_BLAS", None),
                    ("DLIB_USE_LAPACK", None),
                    ("LAPACK_FORCE_UNDERSCORE", None),
                ]
                ext.libraries += ["blas", "lapack"]
            own = "system" if blas == "1" else "dlib's own code"
            _say(f"dlib {DLIB_VERSION} from source ({root}), BLAS/LAPACK: {own}")
        super().build_extensions()


ParallelCompile("FACEFILL_BUILD_JOBS", default=0).install()

ext = Pybind11Extension(
    "facefill_core._landmarks",
    sorted(glob("csrc/*.cpp")),
    depends=sorted(glob("csrc/*.h")),  # a header edit rebuilds (kernels_impl.h is the kernels)
    include_dirs=["csrc"],
    extra_compile_args=extra + openmp,
    extra_link_args=openmp,
    cxx_std=17,
)

setup(ext_modules=[ext], cmdclass={"build_ext": BuildExt})
