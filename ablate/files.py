"""Files that many processes share: written whole or not at all, never under a shared name.

Every writer writes to a temporary name of its own (``.<name>.<host>.<pid>.<random>.tmp``, in
the destination's folder) and renames it into place; ``os.replace`` is atomic on POSIX, so a
reader sees the old file or the new one, never a torn one, and two writers of the same file
never rename each other's temporary away. New files get the usual permissions (0666 less the
umask), so results on a shared file system are readable by the group that shares it.
"""

from __future__ import annotations

import glob
import os
import socket
import uuid
from typing import Callable


def temporary_name(path: str) -> str:
    """A name beside ``path`` that no other writer (process, host) uses."""
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def temporaries_of(path: str) -> list[str]:
    """The temporary files of every writer of ``path`` (left behind by killed writers)."""
    folder, name = os.path.split(path)
    return glob.glob(os.path.join(glob.escape(folder), f".{glob.escape(name)}.*.tmp"))


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Call ``write(tmp)`` to fill a temporary file, then rename it to ``path``.

    The temporary file is created empty first (``open(..., 'x')``), so it takes the umask's
    permissions whatever ``write`` uses to fill it; it is removed if anything fails.
    """
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = temporary_name(path)
    with open(tmp, "xb"):
        pass
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def create_exclusive(path: str, text: str) -> bool:
    """Create ``path`` holding ``text`` unless it exists; True if this call created it.

    The text is written to a temporary file first and hard-linked to ``path``: ``link`` fails
    when the name exists and is atomic on local and network file systems alike, so exactly
    one of several concurrent callers wins, and the winner's file is complete when it appears.
    """
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = temporary_name(path)
    with open(tmp, "x") as handle:
        handle.write(text)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        os.remove(tmp)
