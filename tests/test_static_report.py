"""The static kernel report's instruments (deblurfast.bench.static, static_model): the cubin and
SASS readers on a real compiled kernel, the occupancy arithmetic, and the time model's response
to where warp lanes lie. The whole report (`deblurfast bench --static`) compiles every case and
is too slow for CI; test_triton_compile.py runs the same compile and checks over all of them."""

import json
import os
import re
import subprocess
import sys

import pytest

from deblurfast.bench import static, static_model

pytest.importorskip("triton")

# A small kernel and large ones: strip_reduce_finish (a reduction over partials); deform_conv2d's
# forward (an implicit GEMM on tensor cores with a 4-corner gather) for NCHW and channels_last, and
# its input backward (gathers and atomics), the hot path at the op sweep's 64 -> 64 3x3 float16.
SMALL, LARGE = "strip_reduce_finish-fp32", "dc_fwd-fp16-k3x3-off1-mask1"
LARGE_CL, LARGE_BWD = LARGE + "-cl", "dc_bwd_data-fp16-k3x3-off1-mask1-fixed0"
LARGE_OFFMASK = "dc_bwd_offmask-fp16-k3x3-off1-mask1-cl"
# dynamic_filter2d's forward (NCHW and channels_last), efficient_attention's context reduction at the op
# sweep's 64 channels, float16, and its context reduction and query backward at SAPHNet's C = 128, C2 = 32
# (where the [maps, positions] and [positions, maps] tiles differ in shape)
DF, DF_CL = "df_fwd-fp16-k3-d1-mode1-softmax1", "df_fwd-fp16-k3-d1-mode1-softmax1-cl"
EA, EA_K, EA_Q = ("ea_ctx_partial-fp16-C64-C264", "ea_ctx_partial-fp16-C128-C232",
                  "ea_bwd_query-fp16-C128-C232-gate1")

_ROWS = """
import json, sys
from deblurfast.bench import static
target = static.arch("sm_90")
cases = {c[0]: c for c in static.triton_cases()}
rows = {}
for name in sys.argv[1:]:
    compiled = static.compile_triton(cases[name], target)
    usage, sass = static.read_cubin(compiled.asm["cubin"])
    rows[name] = {"row": static.triton_row(cases[name], target), "metadata_shared": compiled.metadata.shared,
                  "usage": usage, "sass": sass, "ptx": compiled.asm["ptx"]}
print(json.dumps(rows))
"""


@pytest.fixture(scope="module")
def compiled():
    try:
        static.cuobjdump()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, "-c", _ROWS, SMALL, LARGE, LARGE_CL, LARGE_BWD, LARGE_OFFMASK, DF, DF_CL,
                          EA, EA_K, EA_Q],
                         capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr[-4000:]
    return json.loads(res.stdout.splitlines()[-1])


def test_every_kernel_function_in_the_cubin_is_read(compiled):
    for name, c in compiled.items():
        kernel = c["row"]["kernel"]
        usage = static.parse_resource_usage(c["usage"])
        assert list(usage) == [kernel]
        assert 0 < usage[kernel]["registers"] <= 255
        sass = static.sass_stats(c["sass"])
        assert list(sass) == [kernel]
        # every SASS instruction line of the function is counted once, NOPs and the final self-branch aside
        lines = [ln for ln in c["sass"].splitlines() if ln.strip().startswith("/*") and "*/" in ln
                 and ln.split("*/", 1)[1].strip() and not ln.split("*/", 1)[1].strip().startswith("/*")]
        real = [ln for ln in lines if " NOP" not in ln]
        assert sass[kernel]["instructions"] == len(real) - 1


def test_memory_instructions_match_the_ptx(compiled):
    """The SASS global loads/stores agree with the PTX's ld.global/st.global (ptxas keeps every global
    access of these kernels: no vector merging across PTX instructions), up to ptxas unrolling a loop
    (strip_reduce_finish with 16-byte aligned pointers: 8 times); a pipelined load is a cp.async
    global -> shared copy in the PTX and an LDGSTS in the SASS. The attention's float16 query backward is
    left out: its SASS has 104 global loads to its PTX's 56, not yet examined."""
    for name in (SMALL, LARGE, LARGE_CL, LARGE_BWD, LARGE_OFFMASK, DF, EA):
        row, ptx = compiled[name]["row"], compiled[name]["ptx"]
        for kind in ("ld", "st"):
            sass_total = sum(v for k, v in row.items() if k.startswith(f"{kind}.global."))
            ptx_total = sum(1 for ln in ptx.splitlines() if f"{kind}.global." in ln
                            or (kind == "ld" and re.search(r"cp\.async\.c[ag]\.shared\.global", ln)))
            unrolled = sass_total // ptx_total if ptx_total else 1
            assert unrolled >= 1 and sass_total == unrolled * ptx_total, (name, kind, sass_total, ptx_total)
            assert unrolled == 1 or name == SMALL, (name, kind, sass_total, ptx_total)


def test_large_kernel_reads_as_the_issue_found_it(compiled):
    """dc_fwd fp16: tensor-core (wgmma) instructions, 128-bit gathers (the issue found 16-bit scalar
    ones); the occupancy follows from the register count and shared memory."""
    row = compiled[LARGE]["row"]
    assert row["tensor.HGMMA"] > 0
    assert row["ld.global.128"] > 0
    assert row["shared"] == compiled[LARGE]["metadata_shared"] + static.parse_resource_usage(
        compiled[LARGE]["usage"])[row["kernel"]]["static_shared"]
    expect = static.occupancy(row["registers"], row["shared"], row["num_warps"], static.arch("sm_90"))
    assert row["ctas_per_sm"] == expect["ctas_per_sm"]


def _tiles(row, op, shape):
    return [a for a in row["accesses"] if a["op"] == op and a["shape"] == list(shape)]


def test_deform_hot_tiles_put_warp_lanes_on_the_contiguous_axis(compiled):
    """From the TTGIR: the kernels gather from channels_last x in both layouts, so the 4-corner gathers
    are [BLOCK_P, BLOCK_C] tiles with lanes along the channels (axis 1), and so are the grad-input
    atomics (a channels_last buffer); the output store is [BLOCK_O, BLOCK_P] for NCHW (lanes along the
    pixels) and [BLOCK_P, BLOCK_O] for channels_last (lanes along the channels): axis 1 again.
    And the gathers, the store and the atomics are vector instructions (128 bits per lane)."""
    fwd, cl, bwd, offmask = (compiled[name]["row"] for name in (LARGE, LARGE_CL, LARGE_BWD, LARGE_OFFMASK))

    def tiles(row):
        return (row["constexprs"][k] for k in ("BLOCK_P", "BLOCK_C", "BLOCK_O"))
    for row in (fwd, cl, offmask):
        P, Cb, _ = tiles(row)
        gathers = _tiles(row, "tt.load", (P, Cb))
        assert len(gathers) >= 4 and all(a["lane_axis"] == 1 for a in gathers), (row["case"], row["accesses"])
        assert row["ld.global.128"] > 0
    for row, shape in ((fwd, lambda P, O: (O, P)), (cl, lambda P, O: (P, O))):
        P, _, O = tiles(row)
        stores = _tiles(row, "tt.store", shape(P, O))
        assert stores and all(a["lane_axis"] == 1 for a in stores), (row["case"], row["accesses"])
        assert row["st.global.128"] > 0
    P, Cb, _ = tiles(bwd)
    atomics = _tiles(bwd, "tt.atomic_rmw", (P, Cb))
    assert len(atomics) == 4 and all(a["lane_axis"] == 1 for a in atomics)
    assert bwd["atom.global.128"] > 0


def test_fixed_hot_path_configurations_keep_no_stack_frame(compiled):
    """deform_conv2d's float16 forward (both layouts) and input backward spilled up to 2,888 B per thread
    before the redesign; test_triton_compile.py holds every dtype and launch of the hot path."""
    for name in (LARGE, LARGE_CL, LARGE_BWD, LARGE_OFFMASK):
        assert compiled[name]["row"]["stack"] == 0, name


def test_dynamic_filter_and_attention_tiles_put_warp_lanes_on_the_contiguous_axis(compiled):
    """From the TTGIR: dynamic_filter2d's per-tap gathers and its store are [BLOCK_C, BLOCK_W] tiles with
    lanes along the pixels for NCHW, [BLOCK_W, BLOCK_C] with lanes along the channels for channels_last;
    its taps are read as [BLOCK_W] rows (no tile padded to a power of two of taps). efficient_attention
    reads the key and query tiles as [BLOCK_K, BLOCK_L], lanes along the positions (L apart maps in
    memory) and transposes them in registers; before, lanes ran across the maps."""
    df, cl = compiled[DF]["row"], compiled[DF_CL]["row"]
    Cb, Wb = df["constexprs"]["BLOCK_C"], df["constexprs"]["BLOCK_W"]
    gathers = _tiles(df, "tt.load", (Cb, Wb))
    assert gathers and all(a["lane_axis"] == 1 for a in gathers), df["accesses"]
    assert all(a["lane_axis"] == 1 for a in _tiles(df, "tt.store", (Cb, Wb)))
    # the 3x3 taps, read for their max, then as weights: each loop unrolled by a row of taps
    assert df["constexprs"]["TAP_UNROLL"] == 3 and len(_tiles(df, "tt.load", (Wb,))) == 2 * 3
    assert {len(a["shape"]) for a in df["accesses"]} == {1, 2}  # no [taps, channels, pixels] tile
    Cb, Wb = cl["constexprs"]["BLOCK_C"], cl["constexprs"]["BLOCK_W"]
    gathers = _tiles(cl, "tt.load", (Wb, Cb))
    assert gathers and all(a["lane_axis"] == 1 for a in gathers), cl["accesses"]
    for name in (EA_K, EA_Q):
        row = compiled[name]["row"]
        Kb, Lb = row["constexprs"]["BLOCK_K"], row["constexprs"]["BLOCK_L"]
        assert Kb != Lb
        tiles = _tiles(row, "tt.load", (Kb, Lb))
        assert tiles and all(a["lane_axis"] == 1 for a in tiles), (name, row["accesses"])
        assert not _tiles(row, "tt.load", (Lb, Kb)), (name, row["accesses"])


def test_dynamic_filter_and_attention_hot_paths_keep_no_stack_frame(compiled):
    """The rewritten dynamic_filter2d NCHW forward and efficient_attention's float16 context reduction at
    the sweep's 64 channels have no stack frame for sm_90 (the channels_last forward, the attention's
    float32 context reduction and its query backward still spill: see the static report)."""
    for name in (DF, EA):
        assert compiled[name]["row"]["stack"] == 0, (name, compiled[name]["row"]["registers"])


def test_occupancy_arithmetic():
    sm90 = static.arch("sm_90")
    # 255 registers: 8192 per warp (rounded to 256), 65536 / (8192 * 4 warps) = 2 CTAs, 8 warps
    assert static.occupancy(255, 0, 4, sm90)["warps_per_sm"] == 8
    assert static.occupancy(255, 0, 4, sm90)["limited_by"] == "registers"
    # 32 registers, 4 warps: 16 CTAs by warps (64 / 4), 16 by registers; never more than 64 warps
    assert static.occupancy(32, 0, 4, sm90)["warps_per_sm"] == 64
    # shared memory: (232448 + 1024) per CTA leaves room for one CTA, 2 at 100 KB
    assert static.occupancy(32, 232448, 4, sm90)["ctas_per_sm"] == 1
    assert static.occupancy(32, 100 * 1024, 4, sm90)["ctas_per_sm"] == 2
    assert static.occupancy(32, 100 * 1024, 4, sm90)["limited_by"] == "shared"
    with pytest.raises(ValueError, match="arch: expected one of"):
        static.arch("sm_75")


@pytest.mark.parametrize("opcode, kind", [
    ("LDG.E.128.CONSTANT", "ld.global.128"), ("LDG.E.U16", "ld.global.16"), ("LDG.E.64", "ld.global.64"),
    ("LDG.E", "ld.global.32"), ("LDG.E.LTC128B.U16.CONSTANT", "ld.global.16"), ("STG.E.U16", "st.global.16"),
    ("STG.E.128", "st.global.128"), ("RED.E.ADD.F32.FTZ.RN.STRONG.GPU", "atom.global.32"),
    ("RED.E.ADD.64.STRONG.GPU", "atom.global.64"), ("REDG.E.ADD.F32x4.FTZ.RN.STRONG.GPU", "atom.global.128"),
    ("ATOMG.E.ADD.F64.RN.STRONG.GPU", "atom.global.64"),
    ("HGMMA.64x64x16.F32", "tensor.HGMMA"), ("HMMA.16816.F32", "tensor.HMMA"), ("STL", "st.local"),
    ("LDL.64", "ld.local"), ("FFMA", None), ("LDS.128", None),
])
def test_sass_opcodes_are_classified_by_width(opcode, kind):
    assert static.classify(opcode) == kind


def test_sass_hot_loop_is_the_backward_branch_with_the_most_memory_instructions():
    """The loop of a kernel that walks its tiles: the span of a backward branch; of nested loops, the one
    holding the most global memory instructions, the inner one where they tie."""
    body = ["MOV R1, c[0x0][0x28] ;", "LDG.E R2, desc[UR4][R4.64] ;",  # prologue: 0x00-0x10
            "IADD3 R3, R3, 0x1, RZ ;",  # 0x20: outer loop
            "LDG.E.128 R8, desc[UR4][R6.64] ;", "FADD R2, R2, R8 ;", "STG.E desc[UR4][R4.64], R2 ;",  # 0x30: inner
            "@P0 BRA 0x30 ;",  # 0x60: inner back edge
            "FMUL R2, R2, R2 ;", "@P1 BRA 0x20 ;",  # 0x80: outer back edge
            "EXIT ;", "BRA 0xa0;"]  # 0xa0: the padding self-branch
    text = "\n".join(["        Function : k"]
                     + [f"        /*{16 * i:04x}*/                   {ins}" for i, ins in enumerate(body)])
    stats = static.sass_stats(text)["k"]
    assert stats["instructions"] == len(body) - 1
    assert (stats["loop_instructions"], stats["loop_memory"]) == (4, 2)  # LDG.128, FADD, STG, BRA
    assert stats["loop_nest"] == [4]
    # a load moved into the outer loop makes it the hot one: its own 3 instructions, then the inner loop's 4
    text = text.replace("FMUL R2, R2, R2 ;", "LDG.E R9, desc[UR4][R4.64] ;")
    outer = static.sass_stats(text)["k"]
    assert (outer["loop_instructions"], outer["loop_memory"], outer["loop_nest"]) == (7, 3, [3, 4])
    # no backward branch: the whole function
    flat = static.sass_stats(text.replace("@P0 BRA 0x30 ;", "NOP ;").replace("@P1 BRA 0x20 ;", "NOP ;"))["k"]
    assert (flat["loop_instructions"], flat["loop_memory"]) == (flat["instructions"], 4)
    assert flat["loop_nest"] == [flat["instructions"]]


def test_model_counts_a_loop_nest_by_its_runs():
    """Given a launch, the instructions executed are each depth's instructions times its runs, plus those
    outside the loop once, per warp of every program; without one (or with a nest of another depth) the
    model falls back to the memory instructions times the hot loop's ratio."""
    row = {**_row(0), "sass_instructions": 20, "loop_nest": [3, 4], "num_warps": 4}
    launch = static_model.Launch(programs=10, runs=(2, 6))
    assert static_model.executed_instructions(row, launch) == 10 * 4 * (3 * 2 + 4 * 6 + 20 - 7)
    assert static_model.executed_instructions(row, static_model.Launch(10, (2,))) is None
    sm90 = static.arch("sm_90")
    stream = static_model.Stream("x", 1e6, 2, True)
    nested = static_model.kernel_time(row, [stream], 0.0, sm90, launch)
    assert nested["issue_ms"] == pytest.approx(10 * 4 * 43 / (sm90.sms * sm90.clock_hz * sm90.schedulers_per_sm) * 1e3)
    ratio = static_model.kernel_time(row, [stream], 0.0, sm90)
    assert ratio["issue_ms"] == pytest.approx(1e6 / 32 * 100 / 10 / (sm90.sms * sm90.clock_hz * sm90.schedulers_per_sm)
                                              * 1e3)


def test_model_charges_a_gather_of_runs_a_line_per_sample():
    """Deform's corners: each sample's BLOCK_C channels one run. 16-byte lanes over 64-byte runs cover
    8 samples an instruction, 8 lines; 128-byte runs, 4 samples in 4 lines (the contiguous minimum)."""
    assert static_model.lines_per_instruction(True, 16, gather=True, run=64) == 8
    assert static_model.lines_per_instruction(True, 16, gather=True, run=128) == 4
    assert static_model.lines_per_instruction(True, 16, gather=True, run=256) == 4  # 2 samples, 2 lines each
    assert static_model.lines_per_instruction(True, 16, gather=True) == 4 + 1


def test_blocked_layout_lane_axis():
    ttgir = ("#blocked = #ttg.blocked<{sizePerThread = [1, 1], threadsPerWarp = [1, 32], warpsPerCTA = [4, 1], "
             "order = [1, 0]}>\n#blocked1 = #ttg.blocked<{sizePerThread = [1, 1], threadsPerWarp = [32, 1], "
             "warpsPerCTA = [1, 4], order = [0, 1]}>\n"
             "    %5 = tt.load %4, %3 : tensor<64x32x!tt.ptr<f16>, #blocked> loc(#loc)\n"
             "    tt.store %7, %6 : tensor<64x64x!tt.ptr<f16>, #blocked1> loc(#loc)\n")
    got = static.accesses(ttgir)
    assert got == [{"op": "tt.load", "shape": [64, 32], "type": "f16", "lane_axis": 1},
                   {"op": "tt.store", "shape": [64, 64], "type": "f16", "lane_axis": 0}]


def _row(lane_axis, warps_per_sm=64):
    return {"case": "x", "sass_instructions": 100, "loop_instructions": 100, "loop_memory": 10, "ld.global.16": 10,
            "warps_per_sm": warps_per_sm,
            "accesses": [{"op": "tt.load", "shape": [64, 32], "lane_axis": lane_axis}]}


def test_model_charges_strided_lanes_a_line_each():
    """A gather whose lanes lie along the strided axis costs 32 lines per warp instruction, against
    ceil(32 * 2 B / 128 B) + 1 = 2 along the contiguous one; too few warps stretch memory time."""
    sm90 = static.arch("sm_90")
    times = {}
    for axis in (0, 1):
        coalesced = static_model.lane_axis(_row(axis), "tt.load", (64, 32)) == 0
        stream = static_model.Stream("x", 1e9, 2, coalesced, gather=True)
        times[axis] = static_model.kernel_time(_row(axis), [stream], 0.0, sm90)
    assert times[1]["wavefronts"] == 16 * times[0]["wavefronts"]
    assert times[1]["lsu_ms"] == pytest.approx(16 * times[0]["lsu_ms"])
    few = static_model.kernel_time(_row(0, warps_per_sm=8), [static_model.Stream("x", 1e9, 2, True, True)], 0.0, sm90)
    assert few["lsu_ms"] == pytest.approx(2 * times[0]["lsu_ms"])
    assert static_model.lane_axis(_row(0), "tt.load", (32, 64)) is None



def test_cuda_dynamic_filter_keeps_no_stack_frame_below_float64(tmp_path):
    """nvcc's sm_90 cubin of the CUDA dynamic_filter2d kernels: no stack frame (spills) in any float32, float16
    or bfloat16 function. 64-bit index division (a subroutine call) and the border gather inlined into the
    input gradient had put one in 31 of them."""
    if static.cuda_home() is None:
        pytest.skip("nvcc: no CUDA toolkit found")
    source = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "csrc", "cuda",
                          "dynamic_filter2d_kernel.cu")
    rows = static.cuda_rows(static.compile_cuda(source, static.arch("sm_90"), str(tmp_path)), source,
                            static.arch("sm_90"))
    kernels = {r["kernel"]: r["stack"] for r in rows}
    assert len(kernels) > 40 and any("InputGradBorder" in k for k in kernels), sorted(kernels)
    assert {k: stack for k, stack in kernels.items() if stack and "double" not in k} == {}
