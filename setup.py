"""Build of the compiled part of wtc_ext, the top-level module ``_wtc_ext``.

    pip install .                          # CUDA kernels if a CUDA toolkit and a CUDA torch exist
    WTC_BUILD_CUDA=0 pip install .         # force a CPU-only build (fast, for iteration)
    WTC_BUILD_CUDA=1 pip install .         # force CUDA kernels (fails if no toolkit is found)
    pip install --no-build-isolation -e .  # development: reuses the installed torch, incremental

The CUDA toolkit is located without help: $CUDA_HOME / $CUDA_PATH, the real nvcc behind a
wrapper script on the PATH, /usr/local/cuda, /usr/local/cuda-*. The cuBLAS/cuSPARSE headers that
ATen's CUDA headers include come from the NVIDIA wheels in site-packages when the toolkit lacks
them. TORCH_CUDA_ARCH_LIST picks the GPU architectures (default: the visible GPU's, else 8.0 and
9.0 with PTX).
"""

import glob
import os
import re
import shutil
import site
import sys
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent
CSRC = ROOT / "csrc"


def _is_toolkit(path):
    return path is not None and (Path(path) / "bin" / "nvcc").is_file() and (
        Path(path) / "include" / "cuda_runtime_api.h"
    ).is_file()


def find_cuda_home():
    """The CUDA toolkit's root, or None. Sees through an nvcc wrapper script on the PATH."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if _is_toolkit(os.environ.get(var)):
            return os.environ[var]
    nvcc = shutil.which("nvcc")
    if nvcc:
        real = os.path.realpath(nvcc)
        candidate = os.path.dirname(os.path.dirname(real))
        if _is_toolkit(candidate):
            return candidate
        try:  # a wrapper script such as `exec /usr/local/cuda-13.0/bin/nvcc "$@"`
            if os.path.getsize(real) < 65536:
                text = Path(real).read_text(errors="ignore")
                for match in re.findall(r"(/[^\s\"']+)/bin/nvcc", text):
                    if _is_toolkit(match):
                        return match
        except OSError:
            pass
    for candidate in ["/usr/local/cuda"] + sorted(glob.glob("/usr/local/cuda-*"), reverse=True):
        if _is_toolkit(candidate):
            return candidate
    return None


def nvidia_wheel_include_dirs():
    """Include folders of the NVIDIA wheels (nvidia/cu13/include, nvidia/cublas/include, ...)."""
    roots = list(sys.path) + site.getsitepackages() + [site.getusersitepackages()]
    found = []
    for root in roots:
        for inc in sorted(glob.glob(os.path.join(root, "nvidia", "*", "include"))):
            if any(os.path.exists(os.path.join(inc, h)) for h in ("cublas_v2.h", "cusparse.h")):
                if inc not in found:
                    found.append(inc)
    return found


def read_sources(with_cuda):
    sources = []
    for line in (CSRC / "sources.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        kind, path = line.split()
        if kind == "cpu" or (kind == "cuda" and with_cuda):
            sources.append(os.path.join("csrc", path))
    return sources


def build_mode():
    mode = os.environ.get("WTC_BUILD_CUDA", "auto").strip().lower()
    if mode not in ("auto", "0", "1"):
        sys.exit(f"WTC_BUILD_CUDA must be 0, 1 or auto, got {mode!r}")
    return mode


def extensions():
    mode = build_mode()
    cuda_home = find_cuda_home() if mode != "0" else None
    if cuda_home:
        os.environ["CUDA_HOME"] = cuda_home  # before torch.utils.cpp_extension guesses it
    import torch
    from torch.utils import cpp_extension

    with_cuda = mode == "1" or (mode == "auto" and torch.version.cuda is not None and cuda_home)
    if with_cuda and not cuda_home:
        sys.exit("WTC_BUILD_CUDA=1 but no CUDA toolkit was found: set CUDA_HOME to its root")
    if with_cuda and torch.version.cuda is None:
        sys.exit(f"WTC_BUILD_CUDA=1 but torch {torch.__version__} is a CPU-only build")

    # at::parallel_for is an OpenMP pragma in ATen's headers: without -fopenmp the CPU kernels run
    # on one thread. The libgomp it links is the one torch has already loaded (same soname).
    openmp = torch.backends.openmp.is_available() and sys.platform.startswith("linux")
    cxx = ["-O3"] + (["-fopenmp"] if openmp else [])
    link = ["-fopenmp"] if openmp else []
    nvcc = ["-O3", "--expt-relaxed-constexpr"]
    define_macros = []
    include_dirs = [str(CSRC)]
    if with_cuda:
        cpp_extension.CUDA_HOME = cuda_home
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0+PTX"
        archs = os.environ.get("TORCH_CUDA_ARCH_LIST", "visible GPU")
        define_macros += [("WTC_WITH_CUDA", None), ("WTC_CUDA_ARCHS", f'"{archs}"')]
        include_dirs += nvidia_wheel_include_dirs()
        print(f"wtc_ext: CUDA build, CUDA_HOME={cuda_home}, archs={archs}", file=sys.stderr)
        extension = cpp_extension.CUDAExtension
        extra = {"cxx": cxx, "nvcc": nvcc}
    else:
        print("wtc_ext: CPU-only build", file=sys.stderr)
        extension = cpp_extension.CppExtension
        extra = {"cxx": cxx}

    ext = extension(
        name="_wtc_ext",  # top level: no source folder shadows it (wtc_ext/ops.py loads it)
        sources=read_sources(with_cuda),
        include_dirs=include_dirs,
        define_macros=define_macros,
        extra_compile_args=extra,
        extra_link_args=link,
    )
    return [ext], {"build_ext": cpp_extension.BuildExtension}


ext_modules, cmdclass = extensions()

setup(
    packages=find_packages(include=["wtc_ext", "wtc_ext.*"])
    + find_packages("python", include=["wtc", "wtc.*"]),
    package_dir={"wtc_ext": "wtc_ext", "wtc": "python/wtc"},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
