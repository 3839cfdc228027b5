"""A simple time model of the Triton kernels at the sweep shapes of
shared/specs/benchmarks.md (1x64x720x1280, 3x3, float16), from their compiled
configurations (deblurfast.bench.static). A static estimate, not a measurement.

Assumptions (each is a stated simplification, to be checked against GPU timings):
- HBM: the op's bytes_min times what the kernels re-read from DRAM (the L2 is
  assumed to catch re-reads of a tile a program or its neighbours just read,
  so DRAM traffic is bytes_min plus the op's own temporaries), at the measured
  3.0 TB/s copy bandwidth of an H100 SXM.
- L1/LSU: a warp's global memory instruction costs one wavefront per 128-byte
  line it touches, one wavefront per SM per clock. A tile whose warp lanes lie
  along the contiguous axis of the tensor touches ceil(32 * bytes / 128) + 1
  lines (gathers: unaligned); lanes along a strided axis touch 32 lines (a
  known stride s: ceil(31 * s / 128) + 1). A gather of samples whose channels are
  each one run (deform's corners: BLOCK_C channels) touches, per instruction, the
  lines of every sample its lanes cover: (32 * bytes per lane / run) * ceil(run / 128)
  (runs aligned to their size, as at the sweep: 64 channels a pixel, blocks of
  BLOCK_C). Which tile axis the lanes lie on is
  read from the TTGIR (threadsPerWarp, order) of the tt.load/tt.store/
  tt.atomic_rmw of that tile's shape. Coalesced streams move the kernel's widest
  SASS access per lane (gathers only where the kernel was told the alignment).
- Issue: at 4 warp instructions per SM per clock. For a kernel whose model gives
  its launch (programs, and how often each depth of its source loop nest runs per
  program: the deform kernels, the dynamic filter forward, strip_reduce, the BA
  mask backward), the warp instructions executed are the SASS instructions of
  each depth of the hot loop nest times its runs, plus those outside the loop
  once, per warp of every program. A SASS nest shallower than the source's has its
  innermost loops unrolled into their parent. Loops side by side at one depth are
  charged that depth's runs (the BA mask backward's row_table loop, 1-2 runs a
  row, is charged its channel loop's 2): an upper bound. For the other kernels
  (one loop, or none), the warp memory instructions times the ratio of SASS
  instructions to global memory instructions in the kernel's hot loop (static
  counts over the backward branch's span that holds the most global memory
  instructions; the whole kernel where it has no loop); a nested loop counted so
  is undercounted (the deform forward by 1.7x at 128 x 32 tiles). Rarely taken
  branches inside the loop (the non-finite handling of the strip kernels) count
  as if taken (an upper bound), except in strip pooling, whose instructions are
  counted on its kernels compiled without that branch.
- Tensor cores: FLOPs at the measured 790 TFLOP/s (float16/bfloat16).
- Latency: with fewer than 16 resident warps per SM the memory times scale by
  16 / warps (too few loads in flight to cover DRAM latency).
- A kernel takes the largest of these times; an op, the sum over its kernels
  (a torch copy between them: its bytes at the copy bandwidth).
% of roofline = floor / estimate, floor = max(FLOPs / 990 TFLOP/s, bytes_min / 3.35 TB/s).
"""

from __future__ import annotations

import dataclasses
import math

HBM_MEASURED = 3.0e12
HBM_PEAK = 3.35e12
TC_MEASURED = 790e12
TC_PEAK = 990e12
LINE = 128
WARPS_TO_HIDE_LATENCY = 16

# the sweep shape: batch 1, 64 channels, 720x1280, 3x3, float16
N, C, H, W, K = 1, 64, 720, 1280, 9
HW = H * W
E = 2  # bytes per float16 element

def lane_axis(row: dict, op: str, shape: tuple) -> int | None:
    """The lane axis of the kernel's access of that op and tile shape (None: not found)."""
    for a in row["accesses"]:
        if a["op"] == op and tuple(a["shape"]) == shape:
            return a["lane_axis"]
    return None


def lines_per_instruction(coalesced: bool, elem_bytes: int, gather: bool = False, stride: int = 0,
                          run: int = 0) -> float:
    """128-byte lines one warp instruction touches: contiguous lanes (a gather's run may start anywhere: one
    line more; a gather of `run`-byte runs, one per sample: the lines of each sample the lanes cover), or
    lanes `stride` bytes apart (0: unknown, one line each)."""
    if not coalesced:
        return min(32.0, math.ceil(31 * stride / LINE) + 1) if stride else 32.0
    span = 32 * elem_bytes
    if gather and run and run < span:
        return span / run * math.ceil(run / LINE)
    return math.ceil(span / LINE) + (1 if gather else 0)


@dataclasses.dataclass
class Stream:
    """Elements one kernel moves through one access pattern over the whole op."""
    what: str
    elements: float
    elem_bytes: int
    coalesced: bool
    gather: bool = False
    stride: int = 0  # bytes between lanes of an uncoalesced stream, where known
    run: int = 0  # bytes of each sample's contiguous run in a gather (0: the warp's lanes are one run)

    vector: int = 1  # elements per lane per instruction

    @property
    def instructions(self) -> float:  # warp instructions
        return self.elements / (32 * self.vector)

    @property
    def wavefronts(self) -> float:
        return self.instructions * lines_per_instruction(self.coalesced, self.elem_bytes * self.vector, self.gather,
                                                         self.stride, self.run)


def vectorized(row: dict, streams: list[Stream]) -> list[Stream]:
    """Coalesced streams at the kernel's widest global access (from the SASS): a kernel whose widest load
    or store is 128 bits moves 8 float16 per lane per instruction there. Gathers too, where each sample's
    channels are one contiguous run (channels innermost) and the launcher proved the alignment."""
    widths = [int(k.rsplit(".", 1)[1]) for k in row if k.startswith(("ld.global.", "st.global.", "atom.global."))
              and k.rsplit(".", 1)[1].isdigit()]
    bits = max(widths, default=32)
    return [dataclasses.replace(s, vector=max(1, bits // (8 * s.elem_bytes))) if s.coalesced
            and (not s.gather or row.get("constexprs", {}).get("VEC", 1) > 1) else s for s in streams]


@dataclasses.dataclass
class Launch:
    """A kernel's launch at the sweep: its programs and how many times each depth of its hot loop nest
    (static.sass_stats' loop_nest, outermost first) runs per program. code: the compiled row whose
    instructions are counted, where it is not the kernel's own (the strip kernels compiled without their
    non-finite branch, which finite data never take)."""
    programs: int
    runs: tuple
    code: dict | None = None


def executed_instructions(row: dict, launch: Launch | None) -> float | None:
    """Warp instructions the launch executes, from the loop nest's static counts and the runs of each
    depth (None: no launch given, or a SASS nest deeper than the launch describes). A shallower nest
    had its innermost loops unrolled: their instructions are in their parent's body."""
    if launch is None:
        return None
    code = launch.code or row
    nest = code.get("loop_nest")
    if nest is None or len(nest) > len(launch.runs):
        return None
    per_program = sum(n * r for n, r in zip(nest, launch.runs)) + code["sass_instructions"] - sum(nest)
    return launch.programs * row["num_warps"] * per_program


def kernel_time(row: dict, streams: list[Stream], flops: float, arch, launch: Launch | None = None) -> dict:
    """The time of one kernel launch from its streams and its compiled row (static.triton_row)."""
    streams = vectorized(row, streams)
    wavefronts = sum(s.wavefronts for s in streams)
    issued = executed_instructions(row, launch)
    if issued is None:
        issued = sum(s.instructions for s in streams) * row["loop_instructions"] / max(row["loop_memory"], 1)
    per_sm_clock = arch.sms * arch.clock_hz
    latency = max(1.0, WARPS_TO_HIDE_LATENCY / max(row["warps_per_sm"], 1))
    t = {"lsu_ms": wavefronts / per_sm_clock * latency * 1e3,
         "issue_ms": issued / (per_sm_clock * arch.schedulers_per_sm) * 1e3,
         "tensor_ms": flops / TC_MEASURED * 1e3 if flops else 0.0}
    return {**t, "ms": max(t.values()), "bound": max(t, key=t.get)[:-3], "wavefronts": wavefronts}


def _coalesced_if(row: dict, op: str, shape: tuple, contiguous_axis: int) -> bool:
    """Whether the tile's warp lanes lie on the tensor's contiguous axis (unknown layout: assume not)."""
    return lane_axis(row, op, shape) == contiguous_axis


def _pixel_tile(row: dict, op: str, P: int, other: int, layout: str, flag: str = "PIXEL_MAJOR") -> bool:
    """Whether a (pixels x channels) tile is coalesced: a kernel with the constexpr flag (PIXEL_MAJOR)
    set accesses it as [channels, pixels], the others as [pixels, channels]; pixels are contiguous in
    NCHW, channels in channels_last."""
    pixel_major = row["constexprs"].get(flag, False)
    shape, pixel_axis = ((other, P), 1) if pixel_major else ((P, other), 0)
    return _coalesced_if(row, op, shape, pixel_axis if layout == "nchw" else 1 - pixel_axis)


def _deform_row(rows: dict, kernel: str, layout: str) -> dict:
    """The compile case of a deform kernel at 3x3 fp16 with offset and mask, for the layout."""
    return rows[f"{kernel}-fp16-k3x3-off1-mask1" + ("-fixed0" if kernel == "dc_bwd_data" else "")
                + ("-cl" if layout == "channels_last" else "")]


def deform_forward(rows: dict, layout: str) -> list:
    """dc_fwd at 64->64 3x3: programs of BLOCK_P pixels x BLOCK_O outputs; per (tap, channel block) a
    4-corner gather of a pixels x BLOCK_C tile of channels-innermost x (an NCHW x is first copied to
    channels_last by torch) and a [BLOCK_C, BLOCK_O] weight tile; one store in the input's layout."""
    row = _deform_row(rows, "dc_fwd", layout)
    P, Cb, O = row["constexprs"]["BLOCK_P"], row["constexprs"]["BLOCK_C"], row["constexprs"]["BLOCK_O"]
    programs = math.ceil(HW / P) * math.ceil(C / O)
    steps = programs * K * math.ceil(C / Cb)
    streams = [
        Stream("x gather (4 corners)", steps * 4 * P * Cb, E, _coalesced_if(row, "tt.load", (P, Cb), 1), True,
               run=Cb * E),
        # weight packed [groups, taps, Cin_g, Cout_g] by the launcher: output channels contiguous
        Stream("weight tile", steps * Cb * O, E, _coalesced_if(row, "tt.load", (Cb, O), 1)),
        # per (pixel, tap): lanes along pixels, contiguous in NCHW, 27 channels apart in channels_last
        Stream("offset + mask", HW * 27, E, layout == "nchw", stride=27 * E),
        Stream("out", HW * C, E, _pixel_tile(row, "tt.store", P, O, layout, "OUT_PIXEL_MAJOR")),
    ]
    flops = 2 * HW * C * C * K
    copy = [("x to channels_last (torch copy)", None, 2 * HW * C * E, 0.0)] if layout == "nchw" else []
    # loops: the channel segments (one), the taps, the channel blocks
    launch = Launch(programs, (1, K, K * math.ceil(C / Cb)))
    return copy + [("dc_fwd", row, streams, flops, launch)]


def deform_backward(rows: dict, layout: str) -> list:
    """The input backward's two launches of dc_bwd_data: the scatter (grad_out tile once per program, per tap
    and channel block a weight tile and 4-corner float32 atomics into the channels_last grad-input buffer)
    and the offset/mask gradients (the same dot, a 4-corner gather instead of the atomics); and
    dc_bwd_weight (per tap and channel block: gather and grad_out tile per BLOCK_P pixels). An NCHW x is
    copied to channels_last first."""
    scatter = _deform_row(rows, "dc_bwd_data", layout)
    offmask = rows["dc_bwd_offmask-fp16-k3x3-off1-mask1" + ("-cl" if layout == "channels_last" else "")]
    weight = _deform_row(rows, "dc_bwd_weight", layout)
    out = []
    for name, row in (("dc_bwd_data", scatter), ("dc_bwd_offmask", offmask)):
        P, Cb, O = row["constexprs"]["BLOCK_P"], row["constexprs"]["BLOCK_C"], row["constexprs"]["BLOCK_O"]
        steps = math.ceil(HW / P) * K * math.ceil(C / Cb)
        streams = [
            Stream("grad_out tile (once per program)", HW * C, E, _pixel_tile(row, "tt.load", P, O, layout)),
            # weight packed [groups, taps, Cout_g, Cin_g] by the launcher: input channels contiguous
            Stream("weight tile", steps * O * Cb, E, _coalesced_if(row, "tt.load", (O, Cb), 1)),
        ]
        if name == "dc_bwd_data":
            streams.append(Stream("grad_input atomics (4 corners)", steps * 4 * P * Cb, 4,
                                  _coalesced_if(row, "tt.atomic_rmw", (P, Cb), 1), True, run=Cb * 4))
            streams.append(Stream("offset + mask in", HW * 27, E, layout == "nchw", stride=27 * E))
        else:
            streams.append(Stream("x gather (4 corners)", steps * 4 * P * Cb, E,
                                  _coalesced_if(row, "tt.load", (P, Cb), 1), True, run=Cb * E))
            streams.append(Stream("offset + mask in, their grads out", HW * 27 * 2, E, layout == "nchw",
                                  stride=27 * E))
        # loops: the taps, the channel segments (one), the channel blocks, the output-channel blocks
        n_cb, n_ob = math.ceil(C / Cb), math.ceil(C / O)
        launch = Launch(math.ceil(HW / P), (K, K, K * n_cb, K * n_cb * n_ob))
        out.append((name, row, streams, 2 * HW * C * C * K, launch))
    P, Cb, O = weight["constexprs"]["BLOCK_P"], weight["constexprs"]["BLOCK_C"], weight["constexprs"]["BLOCK_O"]
    steps = math.ceil(HW / P) * K * math.ceil(C / Cb)
    weight_streams = [
        Stream("x gather (4 corners)", steps * 4 * P * Cb, E, _coalesced_if(weight, "tt.load", (P, Cb), 1), True,
               run=Cb * E),
        Stream("grad_out tile", steps * P * O, E, _pixel_tile(weight, "tt.load", P, O, layout)),
        Stream("offset + mask", HW * 27 * math.ceil(C / Cb), E, layout == "nchw", stride=27 * E),
    ]
    # a program per (channel block, tap, output block, pixel chunk) walks its chunk's pixel tiles: in all, every
    # (channel block, tap, output block) walks every pixel tile once
    from deblurfast.kernels.deform_conv2d import weight_chunks

    per_chunk = math.ceil(C / Cb) * K * math.ceil(C / O)
    chunks, tiles_per_chunk = weight_chunks(math.ceil(HW / P), per_chunk)
    launch = Launch(chunks * per_chunk, (tiles_per_chunk,))
    out.append(("dc_bwd_weight", weight, weight_streams, 2 * HW * C * C * K, launch))
    copy = [("x to channels_last (torch copy)", None, 2 * HW * C * E, 0.0)] if layout == "nchw" else []
    return copy + out


def dynamic_filter_forward(rows: dict, layout: str) -> list:
    """df_fwd k=3 (channels_last) and df_fwd_rows (NCHW): a program of BLOCK_W pixels of a row loops over the
    channel blocks; the 9 taps of its pixels read once for their max and once per channel block (from L1 after
    the first). channels_last: per tap a [BLOCK_W, BLOCK_C] tile whose rows are each source pixel's channels,
    one 16-byte aligned run (64 channels), not a gather. NCHW, by rows of taps: per row of taps a [BLOCK_C, J,
    CHUNK] tile of aligned chunks of CHUNK pixels (lanes along the chunks, contiguous) and the chunks' two
    neighbours (lanes CHUNK elements apart); its taps are a [J, CHUNK] tile on the program's 256 threads, one
    16-bit load a lane (each element loaded by 4 lanes)."""
    if layout == "channels_last":
        row = rows["df_fwd-fp16-k3-d1-mode1-softmax1-cl"]
        Cb, Wb = row["constexprs"]["BLOCK_C"], row["constexprs"]["BLOCK_W"]
        n_cb = math.ceil(C / Cb)
        streams = [
            Stream("taps", HW * K * (1 + n_cb), E, False),
            Stream("x gather", HW * C * K, E, _coalesced_if(row, "tt.load", (Wb, Cb), 1)),
            Stream("out", HW * C, E, _coalesced_if(row, "tt.store", (Wb, Cb), 1)),
        ]
        # loops: the channel blocks, the taps (TAP_UNROLL a step)
        launch = Launch(H * math.ceil(W / Wb), (n_cb, n_cb * math.ceil(K / row["constexprs"]["TAP_UNROLL"])))
        return [("df_fwd", row, streams, 0.0, launch)]
    from deblurfast.kernels.dynamic_filter2d import CHUNK

    row = rows["df_fwd_rows-fp16-k3-d1-mode1-softmax1"]
    Cb, Wb = row["constexprs"]["BLOCK_C"], row["constexprs"]["BLOCK_W"]
    chunk, ks, pad = CHUNK.value, 3, 1
    tile = (Cb, Wb // chunk, chunk)
    n_cb = math.ceil(C / Cb)
    lanes_per_tap = 32 * row["num_warps"] / Wb  # lanes that load each tap element
    streams = [
        Stream("taps", HW * K * (1 + n_cb) * lanes_per_tap, E, False, stride=E),
        Stream("x rows (aligned chunks)", HW * C * ks, E, _coalesced_if(row, "tt.load", tile, 1)),
        Stream("x chunk neighbours", HW * C * ks * 2 * pad / chunk, E, False, stride=chunk * E),
        Stream("out", HW * C, E, _coalesced_if(row, "tt.store", tile, 1)),
    ]
    # loops: the channel blocks, the rows of taps
    launch = Launch(H * math.ceil(W / Wb), (n_cb, n_cb * ks))
    return [("df_fwd_rows", row, streams, 0.0, launch)]


def attention_forward(rows: dict, layout: str) -> list:
    """ea_ctx_partial ([BLOCK_K, BLOCK_L] key tile, transposed in registers for the dot; [BLOCK_C, BLOCK_L]
    value tile) and ea_out (query, gate, out) at C = C2 = 64, L = 720*1280; the maps of [N, C, L] are L apart,
    positions contiguous."""
    part = rows["ea_ctx_partial-fp16-C64-C264"]
    out = rows["ea_out-fp16-C64-C264-gate1"]
    Cb, Kb, Lb = (part["constexprs"][k] for k in ("BLOCK_C", "BLOCK_K", "BLOCK_L"))
    n_cb = math.ceil(C / Cb)
    part_streams = [
        Stream("key tile", HW * C * n_cb, E, _coalesced_if(part, "tt.load", (Kb, Lb), 1)),
        Stream("value tile", HW * C, E, _coalesced_if(part, "tt.load", (Cb, Lb), 1)),
    ]
    Cb_o, Kb_o, Lb_o = (out["constexprs"][k] for k in ("BLOCK_C", "BLOCK_K", "BLOCK_L"))
    out_streams = [
        Stream("query tile", HW * C, E, _coalesced_if(out, "tt.load", (Kb_o, Lb_o), 1)),
        Stream("gate", HW * C, E, _coalesced_if(out, "tt.load", (Cb_o, Lb_o), 1)),
        Stream("out", HW * C, E, _coalesced_if(out, "tt.store", (Cb_o, Lb_o), 1)),
    ]
    flops = 2 * HW * C * C
    return [("ea_ctx_partial", part, part_streams, flops), ("ea_out", out, out_streams, flops)]


def _strip_launch(rows: dict, case: str) -> Launch:
    """strip_reduce: a program per plane (N*C) and range of column tiles, walking all rows of each tile
    (loops: the column tiles, the row tiles). strip_spread: a program per plane, column tile and range of
    row tiles (loop: the row tiles). As the launchers size them for the H100's 132 SMs; instructions
    counted on the case compiled without the non-finite branch."""
    from deblurfast.kernels import strip_pool as sp

    from .static import arch

    row, target = rows[case], sp._PROGRAMS_PER_SM * arch("sm_90").sms
    BH, BW = row["constexprs"]["BLOCK_H"], row["constexprs"]["BLOCK_W"]
    code = rows.get(case + "-finite")
    if case.startswith("strip_reduce"):
        n_tiles = math.ceil(W / BW)
        ranges, _ = sp.tile_ranges(n_tiles, N * C, target)
        return Launch(N * C * ranges, (n_tiles / ranges, n_tiles / ranges * math.ceil(H / BH)), code)
    n_wb, n_tiles = math.ceil(W / BW), math.ceil(H / BH)
    ranges, _ = sp.tile_ranges(n_tiles, N * C * n_wb, target)
    return Launch(N * C * n_wb * ranges, (n_tiles / ranges,), code)


def strip_pool_forward(rows: dict, layout: str) -> list:
    """strip pooling as BANet runs it, pool then expand: strip_reduce (one read of x into the strips, the
    adaptive means) and strip_spread by index map (strip_expand: one write of the output; per pixel a v
    entry of its row and an h entry of its column, gathered from the small strips: L1 hits)."""
    reduce_row = rows["strip_reduce-fp16-mode0"]
    spread_row = rows["strip_spread-fp16-mode1"]
    return [("strip_reduce", reduce_row, [Stream("x", HW * C, E, True)], 0.0,
             _strip_launch(rows, "strip_reduce-fp16-mode0")),
            ("strip_spread", spread_row, [Stream("v, h gathers", 2 * HW * C, E, True, gather=True),
                                          Stream("out", HW * C, E, True)], 0.0,
             _strip_launch(rows, "strip_spread-fp16-mode1"))]


def strip_pool_backward(rows: dict, layout: str) -> list:
    """Its adjoint: strip_reduce by index map (the expansion's gradient: sums of grad_out, one read) and
    strip_spread with the adaptive bins (the means' gradient: one write of grad_x)."""
    reduce_row = rows["strip_reduce-fp16-mode1"]
    spread_row = rows["strip_spread-fp16-mode0"]
    return [("strip_reduce", reduce_row, [Stream("grad_out", HW * C, E, True)], 0.0,
             _strip_launch(rows, "strip_reduce-fp16-mode1")),
            ("strip_spread", spread_row, [Stream("grad_x", HW * C, E, True)], 0.0,
             _strip_launch(rows, "strip_spread-fp16-mode0"))]


def ba_mask_forward(rows: dict, layout: str) -> list:
    """blur_aware_mask fwd at F = 64, C = 64: reads x, writes out (z from the small tables)."""
    fwd = rows["blur_aware_mask_fwd-fp16-F64-bias1"]
    return [("blur_aware_mask_fwd", fwd, [Stream("x", HW * C, E, True), Stream("out", HW * C, E, True)],
             2 * HW * C * 64)]


def _ba_backward_geometry(row: dict | None = None) -> dict:
    """The sweep launch of blur_aware_mask's backward (BANet's fused path, F = C = 64): its tile (the compiled
    row's, else the launcher's), column tiles, row chunks and partial sizes as mask_backward sizes them for
    the H100's 132 SMs, and the tables' widths (KA, KB: the segments of the strip expansions of 1280 columns
    and 720 rows)."""
    import torch

    from deblurfast.kernels import strip_pool as sp
    from deblurfast.nn.blur_aware_attention import strip_segments

    from .static import arch

    col_index, col_sources = strip_segments(W, 3, False, torch.float16, torch.device("cpu"))
    KA = col_sources.shape[1]
    KB = strip_segments(H, 2, False, torch.float16, torch.device("cpu"))[1].shape[1]
    cfg = row["constexprs"] if row else sp._mask_bwd_config(64, torch.float16)
    n_wb = math.ceil(W / cfg["BLOCK_W"])
    tiles = col_index.split(cfg["BLOCK_W"])
    tile_entries = sum(int(t.max()) - int(t.min()) + 1 for t in tiles)  # row_table entries the tiles read
    n_chunks, _ = sp.mask_chunks(N, H, n_wb, sp._PROGRAMS_PER_SM * arch("sm_90").sms)
    return {"KA": KA, "KB": KB, "n_wb": n_wb, "n_chunks": n_chunks, "programs": N * n_wb * n_chunks,
            "channel_blocks": math.ceil(C / cfg["BLOCK_C"]),
            "part_rows": N * tile_entries * H * 64, "part_cols": N * (n_chunks + KB - 1) * 64 * W,
            "part_w": N * n_wb * n_chunks * C * 64, "part_b": N * n_wb * n_chunks * C * cfg["BLOCK_W"],
            "block_w": cfg["BLOCK_W"]}


def ba_mask_backward(rows: dict, layout: str) -> list:
    """blur_aware_mask bwd (all gradients): reads grad_out and x, writes grad_x; per row of a program's chunk the
    weight gradient's [C, F] partial and the bias gradient's [C, BLOCK_W] are read and written back (L2-resident),
    the row table's partial written per col_index entry ([F] runs) and col_table's per run of equal row_index;
    blur_aware_mask_cols_finish sums those runs and blur_aware_mask_rows_finish the column tiles' row-table
    partials (float32)."""
    bwd = rows["blur_aware_mask_bwd-fp16-F64-need1111"]
    fin = rows["blur_aware_mask_cols_finish-fp16-F64"]
    g = _ba_backward_geometry(bwd)
    partials = g["part_rows"] + g["part_cols"]
    # loops: the chunk's rows; per row the channel blocks and (beside them) the row_table entries
    rows_per_program = H / g["n_chunks"]
    launch = Launch(g["programs"], (rows_per_program, rows_per_program * g["channel_blocks"]))
    return [("blur_aware_mask_bwd", bwd, [Stream("grad_out, x", 2 * HW * C, E, True),
                                          Stream("grad_x", HW * C, E, True),
                                          Stream("weight partial (per row, load + store)", 2 * H * g["n_wb"] * C * 64,
                                                 4, True),
                                          Stream("bias partial (per row, load + store)",
                                                 2 * H * g["n_wb"] * C * g["block_w"], 4, True),
                                          Stream("table partials", partials, 4, True)],
             6 * HW * C * 64, launch),
            ("blur_aware_mask_cols_finish", fin, [Stream("col_table partials", g["part_cols"], 4, True),
                                                  Stream("grad col_table", N * g["KB"] * 64 * W, E, True)], 0.0),
            ("blur_aware_mask_rows_finish", rows["blur_aware_mask_rows_finish-fp16-F64"],
             [Stream("row_table partials", g["part_rows"], 4, True),
              Stream("grad row_table", N * g["KA"] * 64 * H, E, False, stride=g["KA"] * E)], 0.0)]


def _ba_backward_bytes() -> float:
    g = _ba_backward_geometry()
    return 3 * C * HW * E + 2 * 4 * (g["part_rows"] + g["part_cols"] + g["part_w"] + g["part_b"])


# (op, layout, model, bytes_min, HBM bytes the kernels move (or a function giving them), FLOPs for the roofline floor)
_DEFORM_MIN = (2 * C + 27) * HW * E
OPS = [
    # NCHW: x also read and written once more by its copy to channels_last
    ("deform_conv2d fwd", "nchw", deform_forward, _DEFORM_MIN, _DEFORM_MIN + 2 * HW * C * E, 2 * HW * C * C * K),
    ("deform_conv2d fwd", "channels_last", deform_forward, _DEFORM_MIN, _DEFORM_MIN, 2 * HW * C * C * K),
    # grad_out, x, offset, mask in; grad_x, grad_offset, grad_mask out. Moved: x twice, the float32
    # grad-input buffer zeroed, accumulated in L2 and written back, then read and cast (NCHW: and x
    # copied to channels_last).
    ("deform_conv2d bwd", "nchw", deform_backward, (3 * C + 2 * 27) * HW * E,
     (6 * C + 4 * 27) * HW * E + 3 * HW * C * 4 + HW * C * E, 2 * 2 * HW * C * C * K),
    ("deform_conv2d bwd", "channels_last", deform_backward, (3 * C + 2 * 27) * HW * E,
     (4 * C + 4 * 27) * HW * E + 3 * HW * C * 4 + HW * C * E, 2 * 2 * HW * C * C * K),
    ("dynamic_filter2d fwd", "nchw", dynamic_filter_forward, (2 * C + K) * HW * E, (2 * C + K) * HW * E, 0),
    ("dynamic_filter2d fwd", "channels_last", dynamic_filter_forward, (2 * C + K) * HW * E, (2 * C + K) * HW * E, 0),
    ("efficient_attention fwd", "nchw", attention_forward, 5 * C * HW * E, 6 * C * HW * E, 4 * HW * C * C),
    ("strip_pool fwd", "nchw", strip_pool_forward, 2 * C * HW * E, 2 * C * HW * E, 0),
    ("strip_pool bwd", "nchw", strip_pool_backward, 2 * C * HW * E, 2 * C * HW * E, 0),
    ("blur_aware_mask fwd", "nchw", ba_mask_forward, 2 * C * HW * E, 2 * C * HW * E, 2 * HW * C * 64),
    # bytes_min: grad_out, x in, grad_x out; moved: + the float32 partials, written and read once
    ("blur_aware_mask bwd", "nchw", ba_mask_backward, 3 * C * HW * E, _ba_backward_bytes, 6 * HW * C * 64),
]


def estimates(rows: dict, arch) -> list[dict]:
    """One estimate row per (op, layout) of OPS from the compiled rows {case: row}."""
    out = []
    for op, layout, model, bytes_min, bytes_moved, flops in OPS:
        try:
            kernels = model(rows, layout)
        except KeyError:  # a kernel of the op was not compiled (bench.static --only, or a failed compile)
            continue
        # a step without a compiled row (a torch copy) moves its bytes at HBM speed
        parts = [{"kernel": name, "case": row["case"], **kernel_time(row, streams, kflops, arch, *launch)} if row else
                 {"kernel": name, "case": None, "lsu_ms": 0.0, "issue_ms": 0.0, "tensor_ms": 0.0,
                  "ms": streams / HBM_MEASURED * 1e3, "bound": "hbm", "wavefronts": 0.0}
                 for name, row, streams, kflops, *launch in kernels]
        if callable(bytes_moved):
            bytes_moved = bytes_moved()
        hbm_ms = bytes_moved / HBM_MEASURED * 1e3
        kernels_ms = sum(p["ms"] for p in parts)
        est = max(hbm_ms, kernels_ms)
        floor = max(flops / TC_PEAK, bytes_min / HBM_PEAK) * 1e3
        out.append({
            "op": op, "layout": layout, "shape": f"{N}x{C}x{H}x{W} 3x3 fp16", "bytes_min": bytes_min,
            "bytes_moved": bytes_moved, "hbm_ms": hbm_ms, "estimate_ms": est, "floor_ms": floor,
            "pct_roofline": 100 * floor / est, "bound": "hbm" if hbm_ms >= kernels_ms else
            "+".join(f"{p['kernel']}:{p['bound']}" for p in parts),
            "kernels": parts, "coalesced": {f"{name}: {s.what}": s.coalesced for name, row, streams, *_ in kernels
                                            if row for s in streams},
        })
    return out
