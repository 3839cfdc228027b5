"""The build: extension loading, the pure-Python fallback, and the CUDA sources
compiling with nvcc on a machine without a GPU."""

import glob
import os
import re
import shutil
import subprocess
import sys
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


def test_version():
    assert deblurfast.__version__
