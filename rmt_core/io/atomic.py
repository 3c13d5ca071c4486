"""Writing a file whole: through a temporary name, with normal permissions, and a clear
message when the disk is full.

safetensors' save_file creates its file with mode 0600 (readable by its owner only); files
RMT Lens writes for people to share (trace files, checkpoints) get the mode any new file
gets here instead: 0666 less the umask (0644 with the usual umask 022).
"""
from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from ..errors import RMTLensError

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def current_umask() -> int:
    """The process's umask, read without changing it (Linux: /proc/self/status); elsewhere it is
    set and restored at once."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def normal_mode() -> int:
    """The permission bits of a new ordinary file here: 0666 & ~umask."""
    return 0o666 & ~current_umask()


def is_disk_full(exc: BaseException) -> bool:
    """True for an OSError ENOSPC / EDQUOT, also as safetensors reports it (SafetensorError
    "IoError(Os { code: 28, kind: StorageFull ...})")."""
    if isinstance(exc, OSError):
        return exc.errno in DISK_FULL
    text = str(exc)
    return "StorageFull" in text or "code: 28," in text or "QuotaExceeded" in text


@contextmanager
def written_whole(path: str | os.PathLike, error: Callable[[str], RMTLensError], what: str = "the file"
                  ) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write to; when the block ends, the file gets
    normal_mode() and replaces `path` in one step (a reader never sees half a file).

    If writing fails, the temporary file is removed, `path` keeps what it held before, and a
    full disk becomes error(message) with a message saying so (what is kept in memory is not
    lost); other OSErrors are re-raised. error: the RMTLensError type of the caller's domain."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
        os.chmod(tmp, normal_mode())
        tmp.replace(path)
    except BaseException as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        if is_disk_full(exc):
            raise error(f"The disk is full: {what} could not be written to {path} (nothing there was changed). "
                        "Free some space or choose another folder, then save again.") from exc
        raise
