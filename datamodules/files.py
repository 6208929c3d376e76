"""Small file helpers shared by every layer: atomic writes, so a reader never sees a half-written file.

A kill during a write leaves either the old file or the new one, never a truncated mix (write to a temp file in the
same folder, flush + fsync, then `os.replace`, which is atomic on POSIX and Windows).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def _file_mode() -> int:
    """0666 minus the process umask: the mode `open()` would give a new file."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _file_mode()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` via a temp file in the same folder + os.replace (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, FILE_MODE)  # mkstemp creates 0600; outputs are meant to be shared like any other file
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 1) -> None:
    """`atomic_write_text` of a JSON document (UTF-8, non-ASCII kept)."""
    atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def atomic_write_jsonl(path: str | os.PathLike, rows: list[dict[str, Any]]) -> None:
    """`atomic_write_text` of one JSON object per line."""
    atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def check_writable(folder: str | os.PathLike, what: str) -> None:
    """Create `folder` if needed and prove it writable now, not after hours of training (a clear error names it)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test.")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise OSError(f"{what} {folder} is not writable ({err.strerror}); choose another folder") from None
