"""Builds the C++ landmark extension `facefill_core._landmarks` against Debian's dlib.

The batch's hot loops (csrc/kernels_*.cpp: leaf additions, tree walk, feature-pixel positions)
are compiled once per instruction set (SSE2, AVX2, AVX-512F, via `#pragma GCC target`) and picked
at run time, so the default build is portable and uses the widest vectors the CPU has.
-ffp-contract=off: no fused multiply-adds anywhere, so every float operation rounds as in dlib
(bit-identical points is the contract).

Environment:
  FACEFILL_NATIVE=1  add -march=native (off by default so the build is portable across x86-64
                     machines).
"""

import os
from glob import glob

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup

extra = ["-O3", "-ffp-contract=off", "-DNDEBUG", "-DDLIB_NO_GUI_SUPPORT"]
if os.environ.get("FACEFILL_NATIVE") == "1":
    extra.append("-march=native")

ext = Pybind11Extension(
    "facefill_core._landmarks",
    sorted(glob("csrc/*.cpp")),
    depends=sorted(glob("csrc/*.h")),  # a header edit rebuilds (kernels_impl.h is the kernels)
    include_dirs=["csrc"],
    libraries=["dlib", "blas", "lapack"],
    extra_compile_args=extra,
    cxx_std=17,
)

setup(ext_modules=[ext], cmdclass={"build_ext": build_ext})
