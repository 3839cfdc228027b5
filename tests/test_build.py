"""The build: extension loading, the pure-Python fallback, setup.py's configuration,
and the full CUDA build on a machine without a GPU (CI)."""

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


def _require_nvcc():
    """The nvcc on PATH; skips without one, except in CI (DEBLURFAST_REQUIRE_NVCC=1), where it fails."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        if os.environ.get("DEBLURFAST_REQUIRE_NVCC") == "1":
            pytest.fail("nvcc not found but DEBLURFAST_REQUIRE_NVCC=1")
        pytest.skip("nvcc not found")
    return nvcc


def test_cuda_extension_built_in_ci():
    """CI has nvcc and no GPU: the whole CUDA extension is built (warnings as errors) and imports;
    that build replaces compiling each .cu file alone and the torch glue against stub headers."""
    if os.environ.get("DEBLURFAST_REQUIRE_NVCC") != "1":
        pytest.skip("DEBLURFAST_REQUIRE_NVCC is not set (CI sets it)")
    assert _ext.EXTENSION_ERROR is None and _ext.WITH_CUDA, _ext.EXTENSION_ERROR or "deblurfast._C built without CUDA"
    assert _ext.has_compiled_op("deform_conv2d") and _ext.has_compiled_op("dynamic_filter2d")


def test_cuda_extension_holds_sm80_and_sm90_code():
    """Built where no GPU is visible, the extension carries A100 and H100 machine code (and PTX)."""
    import torch

    if not _ext.WITH_CUDA or torch.cuda.is_available() or os.environ.get("TORCH_CUDA_ARCH_LIST"):
        pytest.skip("not a CUDA build for the default architectures")
    import triton

    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    if not os.path.exists(cuobjdump):
        pytest.skip(f"no cuobjdump at {cuobjdump}")
    so = _ext._C.__file__
    elf = subprocess.run([cuobjdump, "--list-elf", so], capture_output=True, text=True)
    ptx = subprocess.run([cuobjdump, "--list-ptx", so], capture_output=True, text=True)
    assert elf.returncode == 0 and ptx.returncode == 0, elf.stderr + ptx.stderr
    assert "sm_80" in elf.stdout and "sm_90" in elf.stdout, elf.stdout
    assert "sm_90" in ptx.stdout, ptx.stdout  # compute_90 PTX: later GPUs JIT it


def _setup_py(*args, **env):
    return subprocess.run([sys.executable, "setup.py", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **env})


def test_setup_prints_its_configuration():
    res = _setup_py("--name")
    assert res.returncode == 0, res.stderr
    assert "deblurfast build configuration:" in res.stdout
    for key in ("torch", "extension", "CUDA_HOME", "nvcc", "MAX_JOBS", "werror", "sources"):
        assert f"  {key} " in res.stdout
    assert "csrc/cpu/dynamic_filter2d.cpp" in res.stdout
    forced = _setup_py("--name", DEBLURFAST_WITH_CUDA="0")
    assert "CppExtension deblurfast._C" in forced.stdout and "csrc/cuda" not in forced.stdout


def _printed(stdout, key):
    return next(line.split(None, 1)[1] for line in stdout.splitlines() if line.startswith(f"  {key} "))


def test_setup_finds_the_toolkit_behind_an_nvcc_wrapper(tmp_path):
    """An nvcc on PATH that is a wrapper script (as here: /usr/local/bin/nvcc exec's the toolkit's):
    torch would guess CUDA_HOME from its folder and miss cuda_runtime_api.h; setup.py asks nvcc."""
    real = _require_nvcc()  # itself a wrapper here: then two in a row
    wrapper = tmp_path / "bin" / "nvcc"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\nexec {real} "$@"\n')
    wrapper.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_HOME", "CUDA_PATH")}
    env["PATH"] = f"{wrapper.parent}{os.pathsep}{env['PATH']}"
    res = subprocess.run([sys.executable, "setup.py", "--name"], capture_output=True, text=True, cwd=ROOT, env=env)
    assert res.returncode == 0, res.stderr
    home = _printed(res.stdout, "CUDA_HOME")
    assert os.path.exists(os.path.join(home, "include", "cuda_runtime_api.h")), home
    assert os.path.isfile(os.path.join(home, "bin", "nvcc")) and not home.startswith(str(tmp_path))
    assert "release" in _printed(res.stdout, "nvcc")


def test_setup_names_a_cuda_home_that_is_not_a_toolkit(tmp_path):
    res = _setup_py("--name", CUDA_HOME=str(tmp_path))
    assert res.returncode != 0
    assert f"CUDA_HOME={tmp_path} is not a CUDA toolkit" in res.stderr
    assert "include/cuda_runtime_api.h" in res.stderr


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
