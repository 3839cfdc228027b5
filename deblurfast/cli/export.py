"""`deblurfast export MODEL -o FILE.onnx`: deblurfast.export.to_onnx from the command line."""

from __future__ import annotations

import sys

from ..export import to_onnx
from ..models import CheckpointError, create, load_pretrained, model_entry

DEFAULT_SIZE = 256  # the CLI's example size (rounded up to the model's multiple)


def add_arguments(parser) -> None:
    parser.add_argument("model", help="network name (deblurfast models lists them)")
    parser.add_argument("-o", "--output", required=True, help="the .onnx file to write (written atomically)")
    parser.add_argument("--weights",
                        help="checkpoint of MODEL to load (any official container format, or .safetensors)")
    parser.add_argument("--height", type=int, help=f"example height (default {DEFAULT_SIZE}, rounded up to the "
                        "model's size multiple); with --static the only height the graph takes")
    parser.add_argument("--width", type=int, help=f"example width (default {DEFAULT_SIZE}, rounded up likewise)")
    parser.add_argument("--static", action="store_true", help="fixed batch 1 and the example's H and W "
                        "(default: dynamic batch, height and width)")
    parser.add_argument("--opset", type=int, help="ONNX opset (default 19, the first with DeformConv)")


def run(args) -> int:
    """`deblurfast export`: one line per problem on stderr and exit status 2, no partial file."""
    try:
        io = model_entry(args.model).io
        model = create(args.model)
        if args.weights:
            load_pretrained(model, args.weights)
        else:
            print(f"warning: no --weights given: {args.model} is exported with random initialization", file=sys.stderr)
        default = io.padded_size(DEFAULT_SIZE)
        height = default if args.height is None else args.height
        width = default if args.width is None else args.width
        to_onnx(model, args.output, height=height, width=width, dynamic=not args.static, opset=args.opset)
    except (CheckpointError, OSError, ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.output} ({args.model}, input (N, 3, H, W) float32 {io.channel_order} in "
          f"{list(io.value_range)}, H and W multiples of {io.multiple})", file=sys.stderr)
    return 0
