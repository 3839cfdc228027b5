"""The `deblurfast` command line."""

from __future__ import annotations

import argparse
import sys


def _bench(args) -> int:
    from .. import bench

    if args.static:
        from ..bench import static

        return static.run(args.arch, args.out)
    if args.models:
        size = tuple(int(v) for v in args.size.lower().split("x")) if args.size else None
        rows = bench.run_models(args.device, args.model, size, args.reps, args.out, args.compile)
        bad = [r for r in rows if r["status"] != "ok"]
        return 1 if bad else 0
    rows = bench.run_ops(args.quick, args.device, args.dtype, args.reps, args.out, args.compile, args.peers)
    bad = [r for r in rows if r["status"].startswith(("TOLERANCE", "error"))]
    if bad:
        print(f"\n{len(bad)} backend result(s) failed their correctness check", file=sys.stderr)
    return 1 if bad else 0


def _backends(args) -> int:
    from ..dispatch import backends

    backends()
    return 0


def _deblur(args) -> int:
    from . import deblur

    return deblur.run(args)


def _export(args) -> int:
    from . import export

    return export.run(args)


def _models(args) -> int:
    from .models import print_models

    print_models(args.gflops)
    return 0


def _train(args) -> int:
    from ..train import trainer

    return trainer.main(args)


def _demo(args) -> int:
    from . import demo

    demo.run(args.out, args.device, args.image, args.reps)
    return 0


def _command(sub, name: str, func, help: str, description: str, add_arguments=None) -> argparse.ArgumentParser:
    """One sub-command: its parser, the arguments its module declares, and the function it runs."""
    p = sub.add_parser(name, help=help, description=description)
    if add_arguments is not None:
        add_arguments(p)
    p.set_defaults(func=func)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deblurfast", description="Fused kernels for motion-deblurring networks.")
    sub = parser.add_subparsers(dest="command", required=True)

    b = _command(
        sub, "bench", _bench,
        help="benchmark every op's backends against the reference",
        description="Time every backend of every op, and the peers users would otherwise run (the eager "
        "reference, torch.compile of it, torchvision, the authors' unfold code), and check each one's forward and "
        "gradients against the reference in float64 on the same inputs (shared/specs/benchmarks.md).",
    )
    b.add_argument("--quick", action="store_true",
                   help="short correctness-and-speed run of every op (default: the full sweep of "
                        "shared/specs/benchmarks.md on a GPU, 1/4-resolution shapes on CPU)")
    b.add_argument("--peers", action="store_true",
                   help="deform_conv2d at the three shapes of issue 16 beside torchvision and onnxruntime's "
                        "DeformConv, and the other ops at their CPU shapes (no torch.compile peer by default)")
    b.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when visible, else cpu")
    b.add_argument("--dtype", action="append", choices=["float32", "float16", "bfloat16", "float64"],
                   help="repeatable; default float32 on CPU, float32/float16/bfloat16 on CUDA")
    b.add_argument("--reps", type=int, help="timed runs per backend (default 5 on CPU, 20 on CUDA)")
    b.add_argument("--out", help="folder for the JSON-lines results and the markdown table")
    b.add_argument("--models", action="store_true",
                   help="end-to-end model benchmarks instead of op benchmarks (720x1280 on GPU, 256x256 on CPU)")
    b.add_argument("--model", action="append", help="with --models: only these models (repeatable)")
    b.add_argument("--size", help="with --models: frame size HxW (default 720x1280 on GPU, 256x256 on CPU)")
    b.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="also time torch.compile of the reference (default: on for full sweeps, off for --quick)")
    b.add_argument("--static", action="store_true",
                   help="static kernel report, no GPU needed: registers, spills, shared memory, occupancy, memory "
                        "and tensor-core instructions of every Triton and CUDA kernel, and estimated times at the "
                        "sweep shapes (default --out bench/results/static-sm90)")
    b.add_argument("--arch", default="sm_90", choices=["sm_80", "sm_90"], help="with --static: the target")

    _command(sub, "backends", _backends, help="which backend runs where, or why not",
             description="Print every op x backend with the devices and dtypes it runs, or why not.")

    from .convert import DESCRIPTION as CONVERT_DESCRIPTION, configure_parser as configure_convert

    configure_convert(sub.add_parser("convert", help="convert the authors' TensorFlow checkpoint to safetensors "
                                     "(no TensorFlow needed)", description=CONVERT_DESCRIPTION))

    from ..train.trainer import add_arguments as add_train_arguments
    from .deblur import add_arguments as add_deblur_arguments
    from .export import add_arguments as add_export_arguments

    _command(sub, "deblur", _deblur, help="deblur an image, a folder of images or a video",
             description="Deblur an image, a folder of images (recursively, keeping names) or a video (keeping frame "
             "rate and audio). Never overwrites an input; unreadable files are reported and skipped.",
             add_arguments=add_deblur_arguments)

    dm = _command(sub, "demo", _demo, help="deblur a synthetically blurred image with the bundled model",
                  description="Blur the bundled sharp image (held out from training) with a synthetic camera "
                        "shake, deblur it with the bundled default weights through the engine, write the images and "
                        "print PSNR/SSIM before and after and the latency.")
    dm.add_argument("--out", default="demo", help="folder for the images (default: %(default)s)")
    dm.add_argument("--device", choices=["cuda", "cpu"], help="default: cuda when visible, else cpu")
    dm.add_argument("--image", help="use this sharp RGB image instead of the bundled one")
    dm.add_argument("--reps", type=int, default=10, help="timed runs (default: %(default)s)")

    _command(sub, "export", _export, help="export a network to ONNX (standard operators; DeformConv for DCN)",
             description="Write MODEL as an ONNX file (opset 19, standard operators only) whose input is the model's "
             "own (N, 3, H, W) float32 image, with dynamic N, H and W unless --static; the graph's metadata records "
             "the size multiple and the image convention (docs/export.md).", add_arguments=add_export_arguments)

    m = _command(sub, "models", _models, help="list the models with parameters and GFLOPs at 720p",
                 description="List every model with its paper, parameter count, input conventions and GFLOPs of one "
                 "720x1280 frame (convolutions and matrix products, counted on the meta device).")
    m.add_argument("--no-gflops", dest="gflops", action="store_false", help="skip the FLOP count")

    _command(sub, "train", _train, help="train a model (fused or reference layers, AMP, DDP through torchrun)",
             description="Train any deblurfast model from a YAML file and/or flags. Checkpoints are written "
             "atomically to OUT/last.pt; --resume continues bit-for-bit. For several processes launch with "
             "torchrun --nproc_per_node N -m deblurfast.cli train ...", add_arguments=add_train_arguments)

    args = parser.parse_args(argv)
    return args.func(args)
