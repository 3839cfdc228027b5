import os

import pytest
import torch

# Triton kernels run on CPU tensors under the interpreter, which must be on
# before triton is imported. On a GPU machine the Triton tests run on the GPU.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def _round_bfloat16_like_the_hardware() -> None:
    """The interpreter casts float32 to bfloat16 by truncation (round toward zero; its explicit
    round-to-nearest drops the carry into the exponent), where GPUs round to nearest even. The bias
    adds up in sums and doubled the bfloat16 errors of a fused block's gradients: the kernels are
    checked under the hardware's rounding, which torch's cast is."""
    if os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        return
    import numpy as np

    try:
        import triton.language as tl
        from triton.runtime import interpreter
    except ImportError:  # no triton: its tests skip
        return
    convert = getattr(interpreter, "_convert_float", None)
    if convert is None:  # a Triton whose interpreter converts otherwise
        return

    def convert_float(data, src, dst, rounding_mode):
        if src == tl.float32 and dst == tl.bfloat16 and rounding_mode in (None, interpreter._ir.ROUNDING_MODE.RTNE):
            rounded = torch.from_numpy(np.ascontiguousarray(data).view(np.float32)).to(torch.bfloat16)
            return rounded.view(torch.int16).numpy().view(np.uint16).reshape(data.shape)
        return convert(data, src, dst, rounding_mode)

    interpreter._convert_float = convert_float


_round_bfloat16_like_the_hardware()


def pytest_collection_modifyitems(config, items):
    # The slow-marked tests (a minute or more each) first, in their order: the workers share them from the
    # start, instead of one of them running the last ones alone while the other idles.
    items.sort(key=lambda item: "slow" not in item.keywords)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (the `cuda` marker selects the GPU suite)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a test module (`pytestmark = pytest.mark.usefixtures("one_thread")`):
    on a small shared machine, OpenMP threads contending over tiny convolutions make them
    many times slower than one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_registry():
    """`register(name, io, builder)`: a stand-in model in the global registry for one test module,
    unregistered when the module ends (library code never sees test models)."""
    from deblurfast.models import register_model, unregister_model

    names = []

    def register(name, io, builder):
        register_model(name, io, "none (a test stand-in)")(builder)
        names.append(name)

    yield register
    for name in names:
        unregister_model(name)
