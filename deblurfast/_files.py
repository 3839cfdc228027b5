"""Atomic file writes: every file deblurfast writes appears complete or not at all."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import tempfile
from collections.abc import Iterator

# A temporary file is named `.tmp-<pid>@<host>-<random><ext>` after the process writing it, so that
# one left behind by a killed process (kill -9 mid-write) can be told from one being written.
_TEMPORARY = re.compile(r"\.tmp-(?P<pid>\d+)@(?P<host>[A-Za-z0-9_.]*)-[A-Za-z0-9_]+(\.\w+)?$")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yields a temporary path in `path`'s folder (same extension, so writers that infer the
    format from it work); when the block succeeds the file is renamed over `path` with the
    permissions of a newly created file, otherwise it is removed. Creates the folder."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".tmp-{os.getpid()}@{_host()}-",
                               suffix=os.path.splitext(path)[1])
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temporaries(folder: str) -> list[str]:
    """Removes the temporary files that atomic writes into `folder` left behind when their
    process was killed (the process is gone, on this host); returns their paths. Files of
    running processes and of other hosts are kept."""
    if not os.path.isdir(folder):
        return []
    removed = []
    for name in sorted(os.listdir(folder)):
        m = _TEMPORARY.match(name)
        if m and m["host"] == _host() and int(m["pid"]) != os.getpid() and not _alive(int(m["pid"])):
            path = os.path.join(folder, name)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
                removed.append(path)
    return removed


def write_text(path: str, text: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(text)
