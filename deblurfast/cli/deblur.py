"""`deblurfast deblur INPUT -o OUTPUT`: deblur an image, a folder of images
(recursively, keeping names) or a video (keeping frame rate and audio).

Images keep their bit depth (8 or 16 bits; see deblurfast.media), alpha
channel (untouched), greyscale, ICC profile and EXIF data. Nothing is ever
written over an input, and an output folder inside the input folder is not
read as input; every output is written to a temporary file and renamed into
place; a file that cannot be read or is not a supported image/video is
reported and skipped while the rest is processed (exit code 1 if any file
failed). Wrong options and unusable weights stop the run with a one-line error
(exit code 2).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

import torch

from .. import media
from .._progress import note, progress
from ..engine import FADE, Engine, TilePlan, TilingWarning, plan_tiles
from ..models import CheckpointError, create, list_models, load_pretrained


def _quality(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be in 1..100, got {value}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="an image, a folder of images (searched recursively) or a video file")
    p.add_argument("-o", "--output", required=True,
                   help="output file, or folder (for a folder input, or to keep the input's file name; "
                        "a path without an extension is a folder)")
    p.add_argument("--model", choices=list_models(),
                   help="network (default: the bundled default model with its trained weights)")
    p.add_argument("--weights", help="checkpoint of --model to load (any official container format, or .safetensors)")
    p.add_argument("--device", choices=["cuda", "cpu"], help="default: cuda when visible, else cpu")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"],
                   help="default: float16 on cuda, float32 on cpu (float16 computes with 11 significant bits: "
                        "float32 for the full precision of 16-bit images)")
    p.add_argument("--backend", default="auto", help="kernel backend request (default: %(default)s)")
    p.add_argument("--tile", type=int, help="process images in overlapping TILE x TILE pieces (images larger than "
                   "memory); at least the model's minimum size, rounded down to its size multiple")
    p.add_argument("--tile-overlap", type=int,
                   help=f"tile overlap in pixels, smaller than --tile (default: twice the model's receptive field "
                        f"plus {FADE}, which leaves no seams for a model without global context)")
    p.add_argument("--jpeg-quality", type=_quality, default=media.JPEG_QUALITY,
                   help="quality of JPEG and WebP outputs, 1..100 (default: %(default)s)")
    p.add_argument("--compile", action="store_true", help="torch.compile the network")
    p.add_argument("--no-cuda-graph", action="store_true", help="do not capture CUDA graphs")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def plan(input_path: str, output: str) -> list[tuple[str, str, str]]:
    """(kind, input file, output file) for every file to process: in a folder, every image and
    video ("unsupported" for the other files, which are reported, not processed), except those in
    the output folder when it lies inside the input folder (an earlier run's outputs)."""
    if os.path.isdir(input_path):
        return [(media.kind_of(rel) or "unsupported", os.path.join(input_path, rel), os.path.join(output, rel))
                for rel in media.list_files(input_path, skip=output)]
    kind = media.kind_of(input_path) or "unsupported"
    if os.path.isdir(output) or output.endswith(os.sep) or not os.path.splitext(output)[1]:
        output = os.path.join(output, os.path.basename(input_path))  # a folder (no extension: a new folder)
    return [(kind, input_path, output)]


def build_engine(args) -> Engine:
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.float16 if device == "cuda" else None)
    if args.model is None:
        from ..weights import default_card, default_model

        model = default_model()
        if not args.quiet:
            print(f"using the bundled default model: {default_card()['summary']}", file=sys.stderr)
    else:
        model = create(args.model)
        if args.weights:
            load_pretrained(model, args.weights)
        else:
            print(f"warning: no --weights given: {args.model} runs with random initialization", file=sys.stderr)
    return Engine(model, device=device, dtype=dtype, backend=args.backend, compile=args.compile,
                  cuda_graph=not args.no_cuda_graph)


def run(args) -> int:
    if not os.path.exists(args.input):
        print(f"error: input {args.input!r} does not exist", file=sys.stderr)
        return 2
    if args.weights and args.model is None:
        print("error: --weights needs --model (the network the checkpoint is for)", file=sys.stderr)
        return 2
    if args.tile_overlap is not None and args.tile is None:
        print("error: --tile-overlap needs --tile", file=sys.stderr)
        return 2
    jobs = plan(args.input, args.output)
    in_folder = os.path.isdir(args.input)
    if in_folder:  # other files in a folder are reported, not failures
        for _, src, _ in (j for j in jobs if j[0] == "unsupported"):
            print(f"skipped {src}: not an image or a video", file=sys.stderr)
        jobs = [j for j in jobs if j[0] != "unsupported"]
    if not jobs:
        print(f"error: no images or videos found in {args.input!r}", file=sys.stderr)
        return 2
    try:
        engine = build_engine(args)
    except (CheckpointError, OSError, ValueError) as e:  # --weights: missing, not a checkpoint, not this model's
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        tiles = None if args.tile is None else plan_tiles(engine.io, args.tile, args.tile_overlap)
    except (ValueError, TypeError) as e:
        print(f"error: --tile / --tile-overlap: {e}", file=sys.stderr)
        return 2
    if tiles is not None:
        for message in tiles.notes:  # once here, not for every image
            print(f"note: {message}", file=sys.stderr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TilingWarning)  # its notes are printed above
        failed = _process(jobs, engine, tiles, args)
    done = len(jobs) - failed
    if not args.quiet:
        if engine.cpu_path is not None:
            measured = ", ".join(f"{path} {1e3 * s:.0f} ms" for path, s in engine.cpu_timings.items())
            print(f"CPU path: {engine.cpu_path}" + (f" (measured on a crop: {measured})" if measured else ""),
                  file=sys.stderr)
        print(f"deblurred {done} of {len(jobs)} file(s) into {args.output}", file=sys.stderr)
    return 1 if failed else 0


def _process(jobs: list[tuple[str, str, str]], engine: Engine, tiles: TilePlan | None, args) -> int:
    """Deblurs every job's file, reporting and skipping those that fail; returns their number."""
    inputs = {os.path.realpath(i) for _, i, _ in jobs}
    tile = dict(tile=tiles.tile, overlap=tiles.overlap) if tiles is not None else {}
    failed = 0
    images = sum(1 for k, _, _ in jobs if k == "image")
    bar = progress(total=images, desc="deblurring", unit="images", disable=args.quiet or not images)
    for kind, src, dst in jobs:
        if os.path.realpath(dst) in inputs:
            note(f"skipped {src}: the output {dst} is an input (refusing to overwrite it)")
            failed += 1
            continue
        try:
            if kind == "image":
                picture = media.read_picture(src)
                for message in media.write_picture(dst, picture.with_rgb(engine.deblur(picture.rgb, **tile)),
                                                   args.jpeg_quality):
                    note(f"note: {message}")
                bar.update()
            elif kind == "video":
                info = media.video_info(src)
                frames_bar = progress(total=info.frames, desc=os.path.basename(src), unit="frames",
                                      disable=args.quiet)

                def frames():
                    if tiles is not None:
                        gen = (engine.deblur(f, **tile) for f in media.read_video(src))
                    else:
                        gen = engine.stream(media.read_video(src))
                    for out in gen:
                        frames_bar.update()
                        yield out

                n = media.write_video(dst, frames(), source=src)
                fps = n / max(frames_bar.format_dict["elapsed"], 1e-9)
                frames_bar.close()
                if not args.quiet:
                    audio = "with its audio" if info.has_audio else "no audio track"
                    note(f"{dst}: {n} frames at {float(info.rate):.3f} frames/s ({audio}), "
                         f"{fps:.1f} frames/s processed")
            else:
                raise ValueError(f"unsupported file type (images: {', '.join(media.IMAGE_EXTENSIONS)}; "
                                 f"videos: {', '.join(media.VIDEO_EXTENSIONS)})")
        except Exception as e:  # report, skip, go on with the rest
            failed += 1
            note(f"skipped {src}: {type(e).__name__}: {e}")
    bar.close()
    return failed
