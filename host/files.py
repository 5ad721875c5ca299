"""Files the `cellsp` command line reads and writes: checks made before any work starts, and
atomic writes (a temporary file in the same folder, then `os.replace`), so that a failed or
interrupted command never leaves a half-written file under the name asked for.

    path = output_file("out", ".npy", force=False, option="OUTPUTS")   # out.npy, checked
    save_npy(path, array)
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager, suppress
from pathlib import Path

import numpy as np

__all__ = ["UsageError", "atomic_path", "input_file", "output_dir", "output_file", "save_npy",
           "write_text"]


class UsageError(ValueError):
    """A path, option or input the user gave cannot work; the message says what to do."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | Path):
    """Yields a temporary path in `path`'s folder to write the whole file to; on success the
    file replaces `path` in one step (readable as a normal new file), on any error or
    interrupt it is removed and `path` is left as it was."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent or ".")
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise


def save_npy(path: str | Path, array) -> Path:
    """`numpy.save` to exactly `path` (no suffix added), atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    """Write `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def _writable_folder(folder: Path, what: str) -> None:
    if not folder.is_dir():
        raise UsageError(f"the folder of {what} does not exist: {str(folder)!r}; create it "
                         f"first, or give a path in an existing folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write to the folder of {what}, {str(folder)!r} (permission "
                         f"denied); give a path in a folder you can write to")


def output_file(path: str | Path, suffix: str | None, force: bool, option: str) -> Path:
    """The file an output goes to, checked before any work starts: `suffix` appended when the
    name lacks it (as `numpy.save` does), its folder existing and writable, not a folder, and
    not an existing file unless `force`. `option` names it in messages (e.g. '--save-state')."""
    path = Path(path)
    if suffix and path.suffix != suffix:
        path = path.with_name(path.name + suffix)
    what = f"{option} {str(path)!r}"
    if path.is_dir():
        raise UsageError(f"{what} is a folder; give a file name")
    _writable_folder(path.parent, what)
    if path.exists() and not force:
        raise UsageError(f"{what} exists; pass --force to replace it, or give another name")
    return path


def output_dir(path: str | Path, option: str) -> Path:
    """A report folder, checked before any work starts: a folder or nothing yet (created later
    with its parents), under a folder that can be written to."""
    path = Path(path)
    what = f"{option} {str(path)!r}"
    if path.exists() and not path.is_dir():
        raise UsageError(f"{what} is a file, not a folder; give a folder for the report")
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{what} cannot be created: {str(existing)!r} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write to {str(existing)!r} (permission denied), so not to "
                         f"{what}; give a folder you can write to")
    return path


def input_file(path: str | Path, what: str, hint: str) -> Path:
    """An input file that must exist and be a file; `hint` says what to give instead."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{what} {str(path)!r} does not exist; {hint}")
    if path.is_dir():
        raise UsageError(f"{what} {str(path)!r} is a folder; {hint}")
    if not os.access(path, os.R_OK):
        raise UsageError(f"{what} {str(path)!r} cannot be read (permission denied); check its "
                         f"permissions")
    return path
