import os

import pytest
import torch

# Triton kernels run on CPU tensors under the interpreter, which must be on
# before triton is imported. On a GPU machine the Triton tests run on the GPU.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
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
