"""Compile the Triton kernels for real GPU targets (sm_80, sm_90) without a GPU, and
hold every configuration's shared memory against the arch's per-block limit.

The interpreter, which runs the Triton tests on CPU, accepts code that the
compiler rejects; compiling here catches that on a machine without a GPU. It
runs in a subprocess because this process has TRITON_INTERPRET=1 set, under
which triton.jit yields interpreted functions that cannot be compiled.
"""

import os
import re
import subprocess
import sys

import pytest

pytest.importorskip("triton")

HERE = os.path.dirname(os.path.abspath(__file__))


# deform_conv2d's hot path at the op sweep's geometry (3x3, offset and mask): forward, the input backward's two
# launches (scatter, offset/mask gradients) and the weight backward, in every dtype, NCHW and channels_last
DEFORM_HOT_PATH = re.compile(r"^(dc_fwd|dc_bwd_data|dc_bwd_offmask|dc_bwd_weight)-(fp16|bf16|fp32)-k3x3-off1-mask1"
                             r"(-fixed0)?(-cl)?$")
# kernels whose every configuration fits in registers on sm_90 (their tiles were chosen for it)
SPILL_FREE = re.compile(r"^(df_fwd-.*|strip_reduce-fp32-.*|(df_bwd_kernel|strip_spread|blur_aware_mask_fwd|"
                        r"blur_aware_mask_bwd)-(fp16|bf16|fp32)-.*)$")


@pytest.mark.parametrize("arch", [80, 90], ids=lambda a: f"sm_{a}")
def test_kernels_compile_for_gpu(arch):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = HERE + os.pathsep + env.get("PYTHONPATH", "")
    res = subprocess.run(
        [sys.executable, os.path.join(HERE, "kernels_under_test.py"), str(arch)],
        capture_output=True, text=True, env=env,
    )
    if res.returncode == 3:
        pytest.skip(res.stdout.strip().splitlines()[-1])
    print(res.stdout)  # registers / stack / shared memory per configuration (pytest -s or -rP shows it)
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-4000:]
    assert "within its limits" in res.stdout
    if arch == 90:  # no stack frame (spills) on deform_conv2d's hot path
        rows = [line.split() for line in res.stdout.splitlines()]
        hot = {r[0]: int(r[3]) for r in rows if len(r) == 5 and DEFORM_HOT_PATH.match(r[0])}
        assert len(hot) == 3 * 2 * 4, sorted(hot)  # dtypes x layouts x launches
        assert {case: stack for case, stack in hot.items() if stack} == {}
        spill_free = {r[0]: int(r[3]) for r in rows if len(r) == 5 and SPILL_FREE.match(r[0])}
        assert len(spill_free) == 20 + 2 + 3 * (4 + 2 + 4 + 6), sorted(spill_free)
        assert {case: stack for case, stack in spill_free.items() if stack} == {}
