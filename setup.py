"""Builds deblurfast._C: C++ CPU kernels always, CUDA kernels when torch has CUDA
and nvcc is found. Build offline with `pip install --no-build-isolation -e .`
(torch must already be installed; see README).

Environment:
  DEBLURFAST_SKIP_EXT=1     install pure Python (no extension)
  DEBLURFAST_WITH_CUDA=0/1  force the CUDA build off / on (default: auto)
  TORCH_CUDA_ARCH_LIST      CUDA architectures, e.g. "8.0;9.0" (default: the visible GPUs)
  MAX_JOBS                  parallel compile jobs (ninja)
  DEBLURFAST_DEBUG=1        -O0 -g, and -G -lineinfo for CUDA
"""

import glob
import os
import shutil
import subprocess

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
CSRC = "csrc"


def _flag(name):
    value = os.environ.get(name)
    return None if value is None or value == "" else value not in ("0", "false", "False", "no")


def _nvcc_version(cuda_home):
    nvcc = os.path.join(cuda_home, "bin", "nvcc") if cuda_home else shutil.which("nvcc")
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError, TypeError):
        return None
    return out.strip().splitlines()[-1]


def _extension():
    """Returns (ext_modules, cmdclass), printing the resolved configuration."""
    if _flag("DEBLURFAST_SKIP_EXT"):
        print("deblurfast: DEBLURFAST_SKIP_EXT=1, installing pure Python (no deblurfast._C)")
        return [], {}
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError as e:
        raise RuntimeError(
            "deblurfast's extension builds against an installed torch: install torch first, then "
            "`pip install --no-build-isolation -e .` (or set DEBLURFAST_SKIP_EXT=1)"
        ) from e

    cuda_home = cpp_extension.CUDA_HOME
    nvcc = _nvcc_version(cuda_home)
    want_cuda = _flag("DEBLURFAST_WITH_CUDA")
    can_cuda = torch.version.cuda is not None and nvcc is not None
    if want_cuda and not can_cuda:
        raise RuntimeError(
            f"DEBLURFAST_WITH_CUDA=1 but torch.version.cuda={torch.version.cuda} and nvcc={nvcc} "
            f"(CUDA_HOME={cuda_home})"
        )
    with_cuda = can_cuda if want_cuda is None else want_cuda

    sources = sorted(glob.glob(f"{CSRC}/*.cpp")) + sorted(glob.glob(f"{CSRC}/cpu/*.cpp"))
    debug = bool(_flag("DEBLURFAST_DEBUG"))
    cxx = ["-O0", "-g"] if debug else ["-O3"]
    cxx += ["-fopenmp"]  # at::parallel_for is OpenMP-inline in torch's headers (the C++ standard: torch's choice)
    extra = {"cxx": cxx}
    macros = []
    if with_cuda:
        sources += sorted(glob.glob(f"{CSRC}/cuda/*.cpp")) + sorted(glob.glob(f"{CSRC}/cuda/*.cu"))
        extra["nvcc"] = (["-O0", "-G", "-lineinfo"] if debug else ["-O3", "-lineinfo"]) + ["--expt-relaxed-constexpr"]
        macros.append(("DEBLURFAST_WITH_CUDA", None))
        Extension = cpp_extension.CUDAExtension
    else:
        Extension = cpp_extension.CppExtension

    print("deblurfast build configuration:")
    print(f"  torch            {torch.__version__} (CUDA {torch.version.cuda})")
    print(f"  extension        {'CUDAExtension' if with_cuda else 'CppExtension'} deblurfast._C")
    print(f"  CUDA_HOME        {cuda_home}")
    print(f"  nvcc             {nvcc}")
    if with_cuda:
        arch = os.environ.get("TORCH_CUDA_ARCH_LIST") or "unset: torch picks the visible GPUs' archs"
        print(f"  CUDA archs       {arch}")
    print(f"  MAX_JOBS         {os.environ.get('MAX_JOBS', 'unset: ninja default')}")
    print(f"  debug            {debug}")
    print(f"  sources          {' '.join(sources)}")

    ext = Extension(
        name="deblurfast._C",
        sources=sources,
        include_dirs=[os.path.join(ROOT, CSRC)],
        define_macros=macros,
        extra_compile_args=extra,
        extra_link_args=["-fopenmp"],
    )
    build_ext = cpp_extension.BuildExtension.with_options(use_ninja=True)
    return [ext], {"build_ext": build_ext}


ext_modules, cmdclass = _extension()

setup(
    packages=find_packages(include=["deblurfast", "deblurfast.*"]) + ["deblurfast.kernels"],
    package_dir={"deblurfast.kernels": "kernels"},
    package_data={"deblurfast.weights": ["*.safetensors", "*.json", "*.png"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
