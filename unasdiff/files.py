"""Files written whole or not at all: a temporary name in the same folder, then an atomic rename.

A reader (a resumed run, a person, another process) never sees half a checkpoint, wav or table."""

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import UnasdiffError


def current_umask() -> int:
    """The process umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path) -> Iterator[Path]:
    """Yields a temporary path beside `path` to write to; renamed to `path` if the block succeeds.
    Temporary names start with "." and end with ".tmp"."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    # mkstemp makes the file 0600; give it the mode a plain open() would (0666 under the umask)
    os.fchmod(fd, 0o666 & ~current_umask())
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def writable_folder(path, setting: str) -> Path:
    """Create folder `path` (and its parents) and check that files can be written in it, before any long
    work: a path that cannot be used is an UnasdiffError naming the path and the setting to change."""
    path = Path(path).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path, prefix=".unasdiff-write-check."):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise UnasdiffError(f"cannot write to {path} ({reason}); set {setting} to a folder you can write") from None
    return path
