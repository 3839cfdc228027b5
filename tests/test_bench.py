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
        assert r["status"] == "ok", r
        assert r["fwd_ms_median"] > 0 and r["max_err_fwd"] < 1e-3
        for key in ("device", "torch", "commit", "dtype", "layout", "shape"):
            assert key in r
    refused = [r for r in rows if "fwd_ms_median" not in r]
    assert all(r["status"] for r in refused)  # a backend that did not run says why
    table = (tmp_path / "ops-quick-cpu.md").read_text()
    assert table.startswith("| op | shape |") and table.count("\n") == len(rows) + 2
    assert "| dynamic_filter2d |" in res.stdout
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


def test_model_bench_times_every_candidate_and_the_stream(tmp_path):
    import torch
    from torch import nn

    from deblurfast import bench
    from deblurfast.models import IOConvention, register_model

    class Small(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x):
            return x + self.conv(x)

    register_model("_bench_small", IOConvention(multiple=4), "none")(lambda: Small())
    rows = bench.run_models(device="cpu", names=["_bench_small"], size=(18, 22), reps=2, out_dir=str(tmp_path))
    assert {r["candidate"] for r in rows} == {"eager fp32 (reference)", "deblurfast engine fp32",
                                              "onnxruntime (exported)"}
    for r in rows:
        assert r["status"] == "ok" and r["latency_ms_median"] > 0 and r["max_dev_vs_fp32"] < 1e-5, r
    (engine,) = [r for r in rows if r["candidate"].startswith("deblurfast engine")]
    assert engine["stream_fps"] > 0 and engine["stream_vs_single"] == engine["stream_fps"] / engine["fps"]
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
    assert by["cpu"]["status"] == "not implemented for blur_aware_mask"
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):  # the fused path, on the interpreter
        assert by["triton"]["status"] == "ok", by["triton"]
    x, *params = case.make(cpu, torch.float64)
    fused, authors = case.run(x, *params, backend="triton,reference"), case.run(x, *params, backend="reference")
    torch.testing.assert_close(fused, authors)
