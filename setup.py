"""Builds deblurfast._C: C++ CPU kernels always, CUDA kernels when torch has CUDA
and nvcc is found. Build offline with `pip install --no-build-isolation -e .`
(torch must already be installed; see README).

Environment:
  DEBLURFAST_SKIP_EXT=1     install pure Python (no extension)
  DEBLURFAST_WITH_CUDA=0/1  force the CUDA build off / on (default: auto)
  CUDA_HOME                 the CUDA toolkit (default: where the nvcc on PATH says it lives)
  TORCH_CUDA_ARCH_LIST      CUDA architectures (default: the visible GPUs', else "8.0;9.0+PTX")
  MAX_JOBS                  parallel compile jobs (ninja)
  DEBLURFAST_DEBUG=1        -O0 -g, and -G -lineinfo for CUDA
  DEBLURFAST_WERROR=1       warnings are errors (C++ and nvcc; CI sets it)
"""

import glob
import os
import re
import shutil
import subprocess

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
CSRC = "csrc"


def _flag(name):
    value = os.environ.get(name)
    return None if value is None or value == "" else value not in ("0", "false", "False", "no")


# Built where no GPU is visible (CI): A100 and H100 code, and PTX for later GPUs.
DEFAULT_CUDA_ARCHS = "8.0;9.0+PTX"


def _is_toolkit(path):
    return bool(path) and os.path.exists(os.path.join(path, "include", "cuda_runtime_api.h"))


def _resolve_cuda_home():
    """The CUDA toolkit's folder, or None without one. torch guesses it from the nvcc on
    PATH, which fails where that nvcc is a wrapper script (its guess lacks the headers:
    "cuda_runtime_api.h: No such file"); nvcc itself knows: `--dryrun` prints `TOP=`."""
    given = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if given:
        if not _is_toolkit(given):
            raise RuntimeError(f"CUDA_HOME={given} is not a CUDA toolkit: expected {given}/include/cuda_runtime_api.h")
        return given
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return "/usr/local/cuda" if _is_toolkit("/usr/local/cuda") else None
    try:
        dry = subprocess.run([nvcc, "--dryrun", "-c", "-x", "cu", os.devnull], capture_output=True, text=True,
                             timeout=60)
        top = re.search(r"^#\$ TOP=(.*)$", dry.stdout + dry.stderr, re.MULTILINE)
    except (OSError, subprocess.SubprocessError):
        top = None
    candidates = [top.group(1).strip() if top else None, os.path.join(os.path.realpath(nvcc), "..", "..")]
    return next((os.path.realpath(c) for c in candidates if _is_toolkit(c)), None)


def _nvcc_version(cuda_home):
    if cuda_home is None:
        return None
    try:
        out = subprocess.run([os.path.join(cuda_home, "bin", "nvcc"), "--version"], capture_output=True, text=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return next((line for line in out.splitlines() if "release" in line), out.strip().splitlines()[-1])


def _extension():
    """Returns (ext_modules, cmdclass), printing the resolved configuration."""
    if _flag("DEBLURFAST_SKIP_EXT"):
        print("deblurfast: DEBLURFAST_SKIP_EXT=1, installing pure Python (no deblurfast._C)")
        return [], {}
    want_cuda = _flag("DEBLURFAST_WITH_CUDA")
    cuda_home = None if want_cuda is False else _resolve_cuda_home()
    if cuda_home is not None:
        os.environ["CUDA_HOME"] = cuda_home  # read once, when torch.utils.cpp_extension is imported
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError as e:
        raise RuntimeError(
            "deblurfast's extension builds against an installed torch: install torch first, then "
            "`pip install --no-build-isolation -e .` (or set DEBLURFAST_SKIP_EXT=1)"
        ) from e

    nvcc = _nvcc_version(cuda_home)
    can_cuda = torch.version.cuda is not None and nvcc is not None
    if want_cuda and not can_cuda:
        raise RuntimeError(
            f"DEBLURFAST_WITH_CUDA=1 but torch.version.cuda={torch.version.cuda} and nvcc={nvcc} "
            f"(CUDA_HOME={cuda_home})"
        )
    with_cuda = can_cuda if want_cuda is None else want_cuda

    sources = sorted(glob.glob(f"{CSRC}/*.cpp")) + sorted(glob.glob(f"{CSRC}/cpu/*.cpp"))
    debug = bool(_flag("DEBLURFAST_DEBUG"))
    werror = bool(_flag("DEBLURFAST_WERROR"))
    cxx = ["-O0", "-g"] if debug else ["-O3"]
    cxx += ["-fopenmp"]  # at::parallel_for is OpenMP-inline in torch's headers (the C++ standard: torch's choice)
    if werror:
        cxx += ["-Wall", "-Werror", "-Wno-unused-parameter"]
    extra = {"cxx": cxx}
    macros = []
    if with_cuda:
        sources += sorted(glob.glob(f"{CSRC}/cuda/*.cpp")) + sorted(glob.glob(f"{CSRC}/cuda/*.cu"))
        extra["nvcc"] = (["-O0", "-G", "-lineinfo"] if debug else ["-O3", "-lineinfo"]) + ["--expt-relaxed-constexpr"]
        if werror:
            extra["nvcc"] += ["-Werror", "all-warnings"]
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_CUDA_ARCHS  # torch would build every arch it knows
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
    print(f"  werror           {werror}")
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
