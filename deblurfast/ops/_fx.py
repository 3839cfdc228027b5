"""torch.fx leaves: the public ops appear as one call_function node in a symbolically
traced graph (as torchvision.ops.deform_conv2d does), however they are imported."""

from __future__ import annotations

import functools

import torch.fx


def fx_leaf(fn):
    """Wraps public op `fn`: called with a torch.fx Proxy among its arguments (symbolic
    tracing: feature extraction, fx quantization), it records a call of `fn` in the
    graph instead of running its checks on the Proxy. torch.fx.wrap would patch one
    module's global name only, not the function itself."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        for a in (*args, *kwargs.values()):
            if isinstance(a, torch.fx.Proxy):
                return a.tracer.create_proxy("call_function", wrapper, args, kwargs)
        return fn(*args, **kwargs)

    return wrapper
