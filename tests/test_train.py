"""The trainer: bit-for-bit resume, atomic checkpoints, schedules, AMP, clipping, DDP."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from deblurfast.models import list_models
from deblurfast.train.trainer import EpochOrder, TrainConfig, Trainer, load_checkpoint, lr_factor
from train_fixtures import TRAIN_TINY, NoisyPairs, l1_loss

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module", autouse=True)
def _train_tiny(model_registry):
    model_registry(*TRAIN_TINY)


def config(tmp_path, **kw):
    base = dict(model="_train_tiny", batch_size=4, steps=6, lr=3e-3, schedule="cosine", warmup=2, out=str(tmp_path),
                checkpoint_every=3, log_every=1, workers=0, seed=7, device="cpu", backend="cpu,reference")
    base.update(kw)
    return TrainConfig(**base)


def make(cfg, **kw):
    return Trainer(cfg, loss=l1_loss, train_set=NoisyPairs(), log=lambda s: None, **kw)


def params(trainer):
    return {k: v.clone() for k, v in trainer.module.state_dict().items()}


@pytest.mark.parametrize("fused", [True, False])
def test_resume_is_bit_for_bit(tmp_path, fused):
    full = make(config(tmp_path / "full", fused=fused, steps=8, checkpoint_every=5))
    full.run()
    first = make(config(tmp_path / "split", fused=fused, steps=8, checkpoint_every=5))
    first.run(until=6)  # interrupted after step 6; the last checkpoint is step 5's
    assert load_checkpoint(str(tmp_path / "split" / "last.pt"))["step"] == 5
    second = make(config(tmp_path / "split", fused=fused, steps=8, checkpoint_every=5))
    second.resume(str(tmp_path / "split" / "last.pt"))
    second.run()
    assert [h["loss"] for h in second.history] == [h["loss"] for h in full.history]  # exactly
    for k, v in params(full).items():
        assert torch.equal(v, params(second)[k]), k
    # the log holds every step once: step 6 of the interrupted run was dropped and written again
    logged = [json.loads(line) for line in (tmp_path / "split" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == list(range(1, 9))
    assert [r["loss"] for r in logged] == [h["loss"] for h in full.history]


def test_it_learns(tmp_path):
    t = make(config(tmp_path, steps=30, lr=1e-2, warmup=0, checkpoint_every=0))
    losses = [h["loss"] for h in t.run()]
    assert sum(losses[-5:]) < sum(losses[:5]), losses


def test_workers_give_the_same_batches(tmp_path):
    a = make(config(tmp_path / "a", workers=0))
    b = make(config(tmp_path / "b", workers=2))
    a.run()
    b.run()
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]


def test_checkpoints_are_atomic_and_safe_to_load(tmp_path):
    t = make(config(tmp_path))
    t.run()
    assert sorted(os.listdir(tmp_path)) == ["last.pt", "log.jsonl"]  # no temporary file left behind
    ckpt = load_checkpoint(str(tmp_path / "last.pt"))  # weights_only=True
    assert ckpt["step"] == 6 and set(ckpt) >= {"model", "optimizer", "schedule", "scaler", "rng", "config"}
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]


def test_resume_refuses_another_run(tmp_path):
    make(config(tmp_path, steps=3)).run()
    other = make(config(tmp_path, steps=6, batch_size=2))
    with pytest.raises(ValueError, match="batch_size=4"):
        other.resume(str(tmp_path / "last.pt"))


def test_data_options_reach_the_dataset(tmp_path):
    from deblurfast.media import write_image

    folder = tmp_path / "sharp"
    for i in range(2):
        write_image(str(folder / f"{i}.png"), torch.randint(0, 256, (40, 40, 3), dtype=torch.uint8).numpy())
    cfg = config(tmp_path / "run", data=str(folder), data_kind="synthetic", crop=16, data_options={"repeat": 3})
    trainer = Trainer(cfg, loss=l1_loss, log=lambda s: None)
    assert len(trainer.train_set) == 6 and trainer.train_set.repeat == 3
    trainer.run(until=1)
    trainer.checkpoint()
    other = Trainer(config(tmp_path / "run", data=str(folder), data_kind="synthetic", crop=16,
                           data_options={"repeat": 2}), loss=l1_loss, log=lambda s: None)
    with pytest.raises(ValueError, match="data_options"):
        other.resume(str(tmp_path / "run" / "last.pt"))


def test_schedules():
    cfg = TrainConfig(lr=1.0, min_lr=0.0, steps=10, warmup=2, schedule="cosine")
    assert [round(lr_factor(cfg, s), 6) for s in (0, 1)] == [0.5, 1.0]
    assert lr_factor(cfg, 2) == 1.0 and abs(lr_factor(cfg, 6) - 0.5) < 1e-12 and lr_factor(cfg, 10) == 0.0
    step = TrainConfig(lr=1.0, schedule="step", step_size=3, gamma=0.1)
    assert [lr_factor(step, s) for s in (0, 2, 3, 6)] == [1.0, 1.0, 0.1, pytest.approx(0.01)]
    with pytest.raises(ValueError, match="schedule must be"):
        lr_factor(TrainConfig(schedule="poly"), 0)


def test_epoch_order():
    order = EpochOrder(10, 4, seed=3, rank=0, world=1)
    assert order.batches_per_epoch == 2
    e0 = order.batch(0)[1] + order.batch(1)[1]
    assert len(set(e0)) == 8 and order.batch(2)[0] == 1
    ranks = [EpochOrder(10, 4, 3, r, 2).batch(0)[1] for r in range(2)]
    assert sorted(ranks[0] + ranks[1]) == sorted(order.batch(0)[1])  # the ranks split the global batch
    with pytest.raises(ValueError, match="divisible by the number of processes"):
        EpochOrder(10, 3, 0, 0, 2)


def test_amp_and_clipping(tmp_path):
    t = make(config(tmp_path, amp="bf16", clip_grad=0.01, steps=3, backend="reference"))
    t.run()
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in t.history)
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert all("grad_norm" in r for r in records)
    with pytest.raises(ValueError, match="amp must be"):
        make(config(tmp_path, amp="int8"))


def test_config_from_yaml_and_flags(tmp_path):
    from deblurfast import cli

    (tmp_path / "cfg.yaml").write_text("model: _train_tiny\nsteps: 2\nlr: 0.01\nbatch_size: 2\n")
    parser_args = ["train", "--config", str(tmp_path / "cfg.yaml"), "--steps", "5", "--model-config", '{"width": 4}']
    import argparse

    from deblurfast.train.trainer import add_arguments, config_from_args

    p = argparse.ArgumentParser()
    add_arguments(p)
    cfg = config_from_args(p.parse_args(parser_args[1:]))
    assert (cfg.model, cfg.steps, cfg.lr, cfg.batch_size, cfg.model_config) == ("_train_tiny", 5, 0.01, 2, {"width": 4})
    with pytest.raises(ValueError, match="unknown training options"):
        TrainConfig.from_dict({"stepz": 3})
    assert cli  # the command exists


DDP_SCRIPT = textwrap.dedent("""
    import os, sys, json, torch
    sys.path.insert(0, {here!r})
    from train_fixtures import TRAIN_TINY, NoisyPairs, l1_loss
    from deblurfast.models import register_model
    from deblurfast.train.trainer import TrainConfig, Trainer
    register_model(TRAIN_TINY[0], TRAIN_TINY[1], "none")(TRAIN_TINY[2])
    cfg = TrainConfig(model="_train_tiny", batch_size=4, steps=4, lr=3e-3, out={out!r}, checkpoint_every=4,
                      workers=0, seed=5, device="cpu", backend="cpu,reference", schedule="constant")
    t = Trainer(cfg, loss=l1_loss, train_set=NoisyPairs(), log=lambda s: None)
    t.run()
    if t.rank == 0:
        torch.save({{k: v for k, v in t.module.state_dict().items()}}, os.path.join({out!r}, "params.pt"))
    print("world", t.world)
""")


def test_two_process_ddp_equals_one_process(tmp_path):
    """2 gloo processes with 2 samples each must match 1 process with the batch of 4."""
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT.format(here=HERE, out=str(tmp_path / "ddp")))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(script)], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "world 2" in res.stdout
    single = make(config(tmp_path / "single", batch_size=4, steps=4, lr=3e-3, seed=5, schedule="constant", warmup=0,
                         checkpoint_every=4))
    single.run()
    ddp = torch.load(tmp_path / "ddp" / "params.pt", weights_only=True)
    for k, v in params(single).items():
        torch.testing.assert_close(ddp[k], v, rtol=1e-5, atol=1e-6, msg=k)


def test_command_line_resume_continues_the_same_run(tmp_path):
    """`deblurfast train ... --resume OUT/last.pt` (as the README runs it): a run stopped after 2
    steps and resumed to 4 ends where an uninterrupted 4-step run ends, loss by loss."""
    import numpy as np

    from deblurfast import cli, media

    rng = np.random.default_rng(0)
    for i in range(3):
        media.write_image(str(tmp_path / "data" / f"{i}.png"), rng.integers(0, 256, (40, 44, 3), dtype=np.uint8))
    args = ["train", "--model", "aspdc", "--model-config",
            '{"channels": [4, 8, 8], "head_res_blocks": 1, "group_res_blocks": 1, "mask_res_blocks": 1, '
            '"d0_mask_layout": "padded"}', "--data", str(tmp_path / "data"), "--data-kind", "synthetic",
            "--crop", "32", "--batch-size", "2", "--workers", "0", "--schedule", "constant", "--warmup", "0",
            "--checkpoint-every", "2", "--log-every", "1", "--device", "cpu"]
    full, split = str(tmp_path / "full"), str(tmp_path / "split")
    assert cli.main(args + ["--steps", "4", "--out", full]) in (0, None)
    assert cli.main(args + ["--steps", "2", "--out", split]) in (0, None)
    assert cli.main(args + ["--steps", "4", "--out", split, "--resume", os.path.join(split, "last.pt")]) in (0, None)

    def log(out):
        return [json.loads(line) for line in open(os.path.join(out, "log.jsonl"))]

    assert [r["step"] for r in log(split)] == [1, 2, 3, 4]
    assert [r["loss"] for r in log(split)] == [r["loss"] for r in log(full)]
    a, b = load_checkpoint(os.path.join(full, "last.pt")), load_checkpoint(os.path.join(split, "last.pt"))
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k


ASPDC_ARGS = ["--model", "aspdc", "--model-config",
              '{"channels": [4, 8, 8], "head_res_blocks": 1, "group_res_blocks": 1, "mask_res_blocks": 1, '
              '"d0_mask_layout": "padded"}', "--data-kind", "synthetic", "--crop", "32", "--batch-size", "2",
              "--workers", "0", "--schedule", "constant", "--warmup", "0", "--checkpoint-every", "2",
              "--log-every", "1", "--device", "cpu"]


def _sharp_images(folder):
    import numpy as np

    from deblurfast import media

    rng = np.random.default_rng(0)
    for i in range(2):
        media.write_image(str(folder / f"{i}.png"), rng.integers(0, 256, (40, 44, 3), dtype=np.uint8))
    return ["--data", str(folder)]


def test_resume_from_a_broken_checkpoint_names_the_file(tmp_path, capsys):
    """An empty or truncated last.pt, or model weights instead of a training checkpoint: one line
    naming the file (it was a bare EOFError)."""
    from deblurfast import cli

    args = ["train", *ASPDC_ARGS, *_sharp_images(tmp_path / "data"), "--steps", "2", "--out", str(tmp_path / "run")]
    assert cli.main(args) == 0
    whole = (tmp_path / "run" / "last.pt").read_bytes()
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "cut.pt").write_bytes(whole[:len(whole) // 3])
    torch.save(load_checkpoint(str(tmp_path / "run" / "last.pt"))["model"], tmp_path / "weights.pt")
    capsys.readouterr()
    for name, message in (("empty.pt", "is empty (0 bytes)"), ("cut.pt", "cannot be read (truncated"),
                          ("weights.pt", "is not a deblurfast training checkpoint"),
                          ("missing.pt", "does not exist")):
        assert cli.main(args[:-2] + ["--out", str(tmp_path / "again"), "--resume", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("deblurfast train: error: ") and err.count("\n") == 1, err
        assert message in err and str(tmp_path / name) in err, err


def test_resume_with_nothing_left_to_train_says_so(tmp_path, capsys):
    from deblurfast import cli

    args = ["train", *ASPDC_ARGS, *_sharp_images(tmp_path / "data"), "--out", str(tmp_path / "run")]
    assert cli.main(args + ["--steps", "2"]) == 0
    last = str(tmp_path / "run" / "last.pt")
    before = (tmp_path / "run" / "last.pt").read_bytes()
    capsys.readouterr()
    for steps in ("2", "1"):
        assert cli.main(args + ["--steps", steps, "--resume", last]) == 0
        err = capsys.readouterr().err
        assert f"nothing to train: {last} is at step 2 and --steps is {steps}" in err
    assert (tmp_path / "run" / "last.pt").read_bytes() == before


def test_train_help_describes_every_option(capsys):
    from deblurfast import cli

    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--schedule {cosine,step,constant} learning-rate schedule after the warm-up" in out
    assert "--amp {none,bf16,fp16} mixed precision" in out
    assert "--data-kind {gopro,hide,realblur,pairs,synthetic} dataset layout" in out
    assert "one of: " + ", ".join(list_models()) in out  # this module's stand-in among them
    assert "aspdc, aspdc_reblur, attentive_msnet, banet, banet_plus, rdafnet_ms, rdafnet_ss, saphnet" in out
    for f in dataclasses.fields(TrainConfig):  # each flag is followed by its own description
        assert f.metadata["help"].split(" (")[0].split(";")[0] in out, f.name


def test_temporaries_of_a_killed_checkpoint_write_are_removed_at_the_next_start(tmp_path):
    """kill -9 while torch.save writes last.pt leaves .tmp-*.pt behind; the next run removes it
    (and keeps the temporaries of live processes and other hosts)."""
    out = tmp_path / "run"
    out.mkdir()
    script = ("import os, signal, torch\n"
              "from deblurfast._files import atomic_path\n"
              f"with atomic_path({str(out / 'last.pt')!r}) as tmp:\n"
              "    torch.save({'x': torch.zeros(1000)}, tmp)\n"
              "    os.kill(os.getpid(), signal.SIGKILL)\n")
    res = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert res.returncode == -9
    stale = [p.name for p in out.iterdir()]
    assert len(stale) == 1 and stale[0].startswith(".tmp-") and stale[0].endswith(".pt")
    from deblurfast._files import _host

    live = out / f".tmp-{os.getpid()}@{_host()}-keepme.pt"
    other_host = out / ".tmp-1@another.host-keepme.pt"
    live.write_bytes(b"")
    other_host.write_bytes(b"")
    logs = []
    Trainer(config(out, steps=1), loss=l1_loss, train_set=NoisyPairs(), log=logs.append).run()
    assert sorted(p.name for p in out.iterdir()) == sorted(["last.pt", "log.jsonl", live.name, other_host.name])
    assert any(stale[0] in line and "interrupted" in line for line in logs)
