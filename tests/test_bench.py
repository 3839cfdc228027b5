"""The README's main command: deblurfast bench --quick."""

import json
import os
import subprocess
import sys

from deblurfast.dispatch import OPS


def test_bench_quick_runs_every_op_and_writes_results(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "deblurfast.cli", "bench", "--quick", "--reps", "1", "--out", str(tmp_path)],
        capture_output=True, text=True,
        # as a user runs it: without the Triton interpreter (too slow for these shapes on CPU)
        env={k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"},
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "ops-quick-cpu.jsonl").read_text().splitlines()]
    assert {r["op"] for r in rows} == set(OPS)
    ran = [r for r in rows if "fwd_ms_median" in r]
    assert {r["op"] for r in ran} == set(OPS)  # at least the reference of every op ran
    for r in ran:
        assert r["status"] in ("ok", "ok (forward only)"), r  # forward only: onnxruntime's DeformConv
        assert r["fwd_ms_median"] > 0 and r["max_err_fwd"] < 1e-3
        for key in ("device", "torch", "commit", "dtype", "layout", "shape"):
            assert key in r
    refused = [r for r in rows if "fwd_ms_median" not in r]
    assert all(r["status"] for r in refused)  # a backend that did not run says why
    table = (tmp_path / "ops-quick-cpu.md").read_text()
    assert table.startswith("| op | shape |") and table.count("\n") == len(rows) + 2
    assert "| dynamic_filter2d |" in res.stdout
    # one table, of what ran; one line naming what cannot run here and why
    assert res.stdout.count("| op | shape |") == 1 and "not implemented" not in res.stdout
    printed = [line for line in res.stdout.splitlines() if line.startswith("| ") and "| op |" not in line]
    assert len(printed) == len(ran)
    lines = [line for line in res.stdout.splitlines() if line.startswith("cannot run here: ")]
    assert len(lines) <= 1
    import torch

    if not torch.cuda.is_available():  # no GPU, no interpreter: Triton cannot run
        assert "triton (" in lines[0] and "TRITON_INTERPRET" in lines[0]
    assert "\r" not in res.stderr and "bench: 100%" in res.stderr  # tqdm's lines in a log file
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert len(list(tmp_path.glob("ops-quick-cpu-*.png"))) == len({(r["op"], r["shape"]) for r in ran})


def test_an_interrupted_sweep_keeps_what_it_measured(tmp_path, monkeypatch):
    import pytest
    import torch

    from deblurfast import bench
    from deblurfast.bench import ops

    def broken(device, dtype):
        raise KeyboardInterrupt  # the user stops the sweep during the second case

    first = ops.dynamic_filter_case(1, 2, 6, 7)
    second = ops.OpCase("strip_pool", "interrupted", broken, None, 1.0)
    monkeypatch.setattr(ops, "cases", lambda device, quick: [first, second])
    with pytest.raises(KeyboardInterrupt):
        bench.run_ops(quick=True, device="cpu", reps=1, out_dir=str(tmp_path), compile_peer=False)
    rows = [json.loads(line) for line in (tmp_path / "ops-quick-cpu.jsonl").read_text().splitlines()]
    assert rows and {r["op"] for r in rows} == {"dynamic_filter2d"}
    assert any(r["backend"] == "reference" and r["status"] == "ok" for r in rows)
    assert torch.get_default_dtype() == torch.float32


def test_compile_peer_refusal_is_reported(tmp_path):
    import torch

    from deblurfast.bench import core, ops

    cpu = torch.device("cpu")
    case = ops.deform_case(1, 2, 5, 6, 5)  # 5x5: inductor's CPU codegen is not run
    rows = ops.run_case(case, cpu, torch.float32, 1, core.environment(cpu), compile_peer=True)
    (row,) = [r for r in rows if r["backend"] == "compile(reference)"]
    assert "fwd_ms_median" not in row and row["status"].startswith("not run: inductor")


def test_onnxruntime_deform_peer_matches_the_reference():
    # a one-node DeformConv model (3 offset groups, stride 2, channels_last input), checked against the
    # float64 reference by run_case and timed forward only
    import pytest
    import torch

    pytest.importorskip("onnxruntime")
    from deblurfast.bench import core, ops

    cpu = torch.device("cpu")
    case = ops.deform_case(1, 6, 9, 11, 3, layout="channels_last")
    make = case.make

    def strided(device, dtype):
        x, offset, weight, bias, _, padding, dilation, mask = make(device, dtype)
        offset = torch.cat([offset[:, :, ::2, ::2]] * 3, 1)
        return x, offset, weight, bias, 2, padding, dilation, torch.cat([mask[:, :, ::2, ::2]] * 3, 1)

    case.make = strided
    rows = {r["backend"]: r for r in ops.run_case(case, cpu, torch.float64, 1, core.environment(cpu))}
    row = rows["onnxruntime DeformConv"]
    assert row["status"] == "ok (forward only)", row["status"]
    assert row["max_err_fwd"] < 1e-12 and "fwd_ms_median" in row and "fwd_bwd_ms_median" not in row
    assert rows["cpu"]["status"] == "ok" and "fwd_bwd_ms_median" in rows["cpu"]


def test_model_bench_times_every_candidate_and_the_stream(tmp_path, model_registry):
    import torch
    from torch import nn

    from deblurfast import bench
    from deblurfast.engine.cpu_path import candidates as engine_paths
    from deblurfast.models import IOConvention

    class Small(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x):
            return x + self.conv(x)

    model_registry("_bench_small", IOConvention(multiple=4), Small)
    rows = bench.run_models(device="cpu", names=["_bench_small"], size=(18, 22), reps=2, out_dir=str(tmp_path))
    assert {r["candidate"] for r in rows} == {"eager fp32 (reference)", "deblurfast engine fp32",
                                              "onnxruntime (exported)", "compile max-autotune (reference)",
                                              "deblurfast engine fp32 compile=True"}
    for r in rows:
        assert r["status"] == "ok" and r["latency_ms_median"] > 0 and r["max_dev_vs_fp32"] < 1e-5, r
    for engine in [r for r in rows if r["candidate"].startswith("deblurfast engine")]:
        assert engine["stream_fps"] > 0 and engine["stream_vs_single"] == engine["stream_fps"] / engine["fps"]
        compiled = engine["candidate"].endswith("compile=True")
        assert engine["cpu_path"] in {str(p) for p in engine_paths(compile=compiled)}
    written = [json.loads(line) for line in (tmp_path / "models-cpu.jsonl").read_text().splitlines()]
    assert [r["candidate"] for r in written] == [r["candidate"] for r in rows]
    assert torch.get_default_dtype() == torch.float32


def test_ba_block_case_compares_the_fused_block_with_the_authors_chain():
    import torch

    from deblurfast.bench import core, ops

    cpu = torch.device("cpu")
    case = ops.ba_block_case(1, 8, 11, 13, fuse=8)
    rows = ops.run_case(case, cpu, torch.float32, 1, core.environment(cpu))
    by = {r["backend"]: r for r in rows}
    assert by["reference"]["status"] == "ok" and by["reference"]["max_err_grad"] < 1e-4
    assert by["cpu"]["status"] == "ok" and by["cpu"]["max_err_grad"] < 1e-4, by["cpu"]  # the fused path, C++
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):  # the fused path, on the interpreter
        assert by["triton"]["status"] == "ok", by["triton"]
    x, *params = case.make(cpu, torch.float64)
    fused, authors = case.run(x, *params, backend="cpu"), case.run(x, *params, backend="reference")
    torch.testing.assert_close(fused, authors)


def test_not_run_here_names_only_what_ran_nowhere():
    from deblurfast.bench import not_run_here

    rows = [
        {"backend": "reference", "status": "ok", "fwd_ms_median": 1.0},
        {"backend": "cpu", "status": "ok", "fwd_ms_median": 1.0},
        {"backend": "cpu", "status": "not implemented for strip_pool"},
        {"backend": "cpu", "status": "refuses float16"},  # ran elsewhere: not named
        {"backend": "cuda", "status": "no CUDA device visible"},
        {"backend": "cuda", "status": "not implemented for strip_pool"},
        {"backend": "triton", "status": "needs the interpreter"},
        {"backend": "triton", "status": "error: RuntimeError: boom"},  # ran, and failed: in the table
        {"backend": "cuda_only_op", "status": "not implemented for deform_conv2d"},
    ]
    assert not_run_here(rows) == "cannot run here: cuda (no CUDA device visible)"
    assert not_run_here(rows[:2]) is None


def test_report_rewrites_only_the_generated_part_of_the_page(tmp_path):
    from deblurfast.bench import report

    device = tmp_path / "results" / "somegpu"
    device.mkdir(parents=True)
    row = {"op": "strip_pool", "shape": "1x2x3x4", "dtype": "float32", "layout": "NCHW", "backend": "triton",
           "device": "Some GPU", "device_type": "cuda", "torch": "2.14.1", "triton": "3.8.0", "cuda": "13.0",
           "commit": "abc1234", "fwd_ms_median": 0.125, "status": "ok"}
    refused = dict(row, backend="cpu", status="not implemented for strip_pool")
    del refused["fwd_ms_median"]
    (device / "ops-full-cuda.jsonl").write_text(json.dumps(row) + "\n" + json.dumps(refused) + "\n")
    static = tmp_path / "results" / "static-sm90"  # compiler readings: linked, not rendered as timings
    static.mkdir()
    (static / "triton-sm_90.jsonl").write_text(json.dumps({"source": "triton", "case": "x", "stack": 0}) + "\n")
    (static / "README.md").write_text("# Static kernel report\n")
    page = tmp_path / "benchmarks.md"
    page.write_text(f"# Benchmarks\n\nhand-written\n\n{report.START}\nstale\n{report.END}\n\nafter\n")
    assert report.update_page(str(page), str(tmp_path / "results"))
    text = page.read_text()
    assert text.startswith("# Benchmarks\n\nhand-written\n") and text.endswith(f"{report.END}\n\nafter\n")
    assert "stale" not in text and "#### `bench/results/somegpu/ops-full-cuda.jsonl`" in text
    assert "1 of 2 rows ran" in text and "| strip_pool | 1x2x3x4 | float32 | NCHW | triton | 0.125 |" in text
    assert "triton-sm_90.jsonl" not in text and "None" not in text
    assert "(../bench/results/static-sm90/README.md)" in text
    assert not report.update_page(str(page), str(tmp_path / "results"))  # nothing left to change
