"""Device tensors cached per shape (index maps, one-hot selectors, channel-segment tables), and
what a CUDA graph must keep alive of them.

A CUDA graph reads the tensors it was captured with by address. When a bounded cache evicts an
entry, its memory goes back to the allocator; a graph captured with it would then read whatever
reuses that memory, silently. So every cache of device tensors is a `device_constant_cache`, and
the engine warms up and captures inside `kept_alive()`, which collects every value these caches
hand out in that block (hits and misses) for the graph to hold as long as it lives.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator

_sinks = threading.local()  # the open kept_alive() blocks of this thread (captures run on one thread)
_caches: list[Callable] = []


def device_constant_cache(maxsize: int | None) -> Callable[[Callable], Callable]:
    """functools.lru_cache(maxsize) for a function of hashable arguments returning device tensors
    (or tuples of them): each value returned inside a kept_alive() block is also recorded there."""

    def decorate(fn: Callable) -> Callable:
        cached = functools.lru_cache(maxsize=maxsize)(fn)

        @functools.wraps(fn)
        def lookup(*args):
            value = cached(*args)
            for sink in getattr(_sinks, "open", ()):
                sink[id(value)] = value
            return value

        lookup.cache_clear = cached.cache_clear
        lookup.cache_info = cached.cache_info
        _caches.append(lookup)
        return lookup

    return decorate


@contextlib.contextmanager
def kept_alive() -> Iterator[dict]:
    """Within the block, every value a device_constant_cache returns is added to the yielded dict
    (id -> value), which keeps it alive after the cache lets go of it."""
    sink: dict = {}
    outer = getattr(_sinks, "open", ())
    _sinks.open = outer + (sink,)
    try:
        yield sink
    finally:
        _sinks.open = outer


def clear_device_constant_caches() -> None:
    """Empties every device constant cache (what eviction does to one entry, to all of them)."""
    for cache in _caches:
        cache.cache_clear()

