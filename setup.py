"""Builds the C++ landmark extension `facefill_core._landmarks` against Debian's dlib.

Environment:
  FACEFILL_NATIVE=1  add -march=native (measured gain in README; off by default so the
                     build is portable across x86-64 machines).
"""

import os
from glob import glob

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup

extra = ["-O3", "-DNDEBUG", "-DDLIB_NO_GUI_SUPPORT"]
if os.environ.get("FACEFILL_NATIVE") == "1":
    extra.append("-march=native")

ext = Pybind11Extension(
    "facefill_core._landmarks",
    sorted(glob("csrc/*.cpp")),
    include_dirs=["csrc"],
    libraries=["dlib", "blas", "lapack"],
    extra_compile_args=extra,
    cxx_std=17,
)

setup(ext_modules=[ext], cmdclass={"build_ext": build_ext})
