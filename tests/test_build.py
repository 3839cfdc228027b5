"""The build: extension loading, the pure-Python fallback, and the CUDA sources
compiling with nvcc on a machine without a GPU."""

import glob
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap

import pytest

import deblurfast
from deblurfast import _ext

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CU_FILES = sorted(glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu")))


def test_extension_loaded_where_required():
    required = os.environ.get("DEBLURFAST_REQUIRE_BACKENDS", "").split(",")
    if "cpu" not in required:
        pytest.skip("DEBLURFAST_REQUIRE_BACKENDS does not list cpu")
    assert _ext.EXTENSION_ERROR is None
    assert _ext.WITH_OPENMP, "built without OpenMP: at::parallel_for would run serially"
    assert _ext.has_compiled_op("dynamic_filter2d") and _ext.has_compiled_op("dynamic_filter2d_backward")


def test_import_without_the_extension():
    # Block deblurfast._C and check the package still imports, explains, and runs the reference.
    script = textwrap.dedent(
        """
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name == "deblurfast._C":
                    raise ImportError("blocked by the test")
        sys.meta_path.insert(0, Block())
        import torch, deblurfast
        from deblurfast.ops.dynamic_filter2d import OP
        assert deblurfast._ext._C is None
        why = OP.refusal("cpu", torch.device("cpu"), torch.float32)
        assert "blocked by the test" in why, why
        x = torch.randn(1, 2, 5, 5)
        out = deblurfast.dynamic_filter2d(x, torch.randn(1, 9, 5, 5))  # auto falls back to the reference
        assert out.shape == x.shape
        print("ok")
        """
    )
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().endswith("ok")
    assert "deblurfast._C failed to load" in res.stderr  # logged once, as a warning


def _included(path, seen=None):
    """Every project header a source includes, transitively."""
    seen = set() if seen is None else seen
    for name in re.findall(r'#include\s+"([^"]+)"', open(path).read()):
        for base in (os.path.dirname(path), os.path.join(ROOT, "csrc")):
            candidate = os.path.normpath(os.path.join(base, name))
            if os.path.exists(candidate) and candidate not in seen:
                seen.add(candidate)
                _included(candidate, seen)
    return seen


@pytest.mark.parametrize("cu", CU_FILES, ids=os.path.basename)
def test_cuda_sources_include_no_torch_header(cu):
    for path in [cu, *_included(cu)]:
        for line in open(path):
            assert not re.match(r"\s*#include\s+[<\"](torch|ATen|c10)/", line), f"{path}: {line.strip()}"


@pytest.mark.parametrize("cu", CU_FILES, ids=os.path.basename)
def test_cuda_sources_compile(cu, tmp_path):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        if os.environ.get("DEBLURFAST_REQUIRE_NVCC") == "1":
            pytest.fail("nvcc not found but DEBLURFAST_REQUIRE_NVCC=1")
        pytest.skip("nvcc not found")
    cmd = [nvcc, "-c", "-std=c++17", "-O3", "-I", os.path.join(ROOT, "csrc"), "-Werror", "all-warnings",
           "-gencode", "arch=compute_80,code=sm_80", "-gencode", "arch=compute_90,code=sm_90",
           cu, "-o", str(tmp_path / "out.o")]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stdout}\n{res.stderr}"


GLUE_FILES = sorted(glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cpp")))


@pytest.mark.parametrize("glue", GLUE_FILES, ids=os.path.basename)
def test_cuda_glue_compiles(glue):
    """The torch glue of the CUDA kernels is only built where torch has CUDA; check its
    syntax and types here against torch's real headers and the CUDA toolkit's runtime
    headers (tests/cuda_glue_stubs supplies the one header a CUDA build of torch generates)."""
    from torch.utils import cpp_extension

    nvcc = shutil.which("nvcc")
    homes = [os.environ.get("CUDA_HOME"), cpp_extension.CUDA_HOME, "/usr/local/cuda",
             os.path.dirname(os.path.dirname(os.path.realpath(nvcc))) if nvcc else None]
    cuda_home = next((h for h in homes if h and os.path.exists(os.path.join(h, "include", "cuda_runtime_api.h"))),
                     None)
    if cuda_home is None:
        if os.environ.get("DEBLURFAST_REQUIRE_NVCC") == "1":
            pytest.fail("the CUDA toolkit's headers are missing but DEBLURFAST_REQUIRE_NVCC=1")
        pytest.skip("no CUDA toolkit headers")
    includes = [os.path.join(ROOT, "csrc"), os.path.join(ROOT, "tests", "cuda_glue_stubs"),
                *cpp_extension.include_paths(), os.path.join(cuda_home, "include"),
                sysconfig.get_paths()["include"]]
    cmd = ["g++", "-std=c++20", "-fsyntax-only", "-Werror", "-Wall", "-Wno-unused-parameter",
           "-DDEBLURFAST_WITH_CUDA", *(f"-I{i}" for i in includes), glue]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stderr[-6000:]}"


def _setup_py(*args, **env):
    return subprocess.run([sys.executable, "setup.py", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **env})


def test_setup_prints_its_configuration():
    res = _setup_py("--name")
    assert res.returncode == 0, res.stderr
    assert "deblurfast build configuration:" in res.stdout
    for key in ("torch", "extension", "CUDA_HOME", "nvcc", "MAX_JOBS", "sources"):
        assert f"  {key} " in res.stdout
    assert "csrc/cpu/dynamic_filter2d.cpp" in res.stdout
    forced = _setup_py("--name", DEBLURFAST_WITH_CUDA="0")
    assert "CppExtension deblurfast._C" in forced.stdout and "csrc/cuda" not in forced.stdout


def test_skip_ext_installs_pure_python(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps", "--target",
         str(tmp_path), ROOT],
        capture_output=True, text=True, env={**os.environ, "DEBLURFAST_SKIP_EXT": "1"},
    )
    assert res.returncode == 0, res.stderr
    assert not list(tmp_path.glob("deblurfast/_C*")), "an extension was built despite DEBLURFAST_SKIP_EXT=1"
    assert (tmp_path / "deblurfast" / "kernels" / "dynamic_filter2d.py").exists()  # kernels/ installed as deblurfast.kernels
    # Hide this checkout's editable install (a meta-path finder) so the copy in tmp_path is imported.
    script = "import sys; sys.meta_path = [f for f in sys.meta_path if '__editable__' not in repr(f)]; " \
             "import deblurfast, torch; assert deblurfast.__file__.startswith(sys.argv[1]), deblurfast.__file__; " \
             "print(deblurfast._ext.EXTENSION_ERROR); " \
             "print(deblurfast.dynamic_filter2d(torch.randn(1, 1, 4, 4), torch.randn(1, 9, 4, 4)).shape)"
    run = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, cwd=str(tmp_path),
                         env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert run.returncode == 0, run.stderr
    assert "is not built" in run.stdout and "torch.Size([1, 1, 4, 4])" in run.stdout


def test_version():
    assert deblurfast.__version__
