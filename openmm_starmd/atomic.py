"""Atomic file and folder writes: no reader ever sees a half-written output.

Every output of the package goes through :func:`atomic_write` (a file) or :func:`atomic_dir`
(a folder): content is written under a temporary name beside the target, then renamed into place,
which POSIX guarantees to be atomic on one file system.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from openmm_starmd.errors import StarMDError


def _umask() -> int:
    """The process umask (read by setting and restoring it)."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _default_file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give: mkstemp's 0600 would hide outputs from other users."""
    return 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator[Any]:
    """Open a temporary file beside ``path``; on success rename it to ``path``, on error delete it.

    Parameters
    ----------
    path
        Final file path. Its folder must exist.
    mode
        ``"w"`` for text, ``"wb"`` for bytes.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, _default_file_mode())
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    with atomic_write(path) as handle:
        json.dump(data, handle, indent=1, sort_keys=False)
        handle.write("\n")


def temporary_path(path: str | os.PathLike) -> Path:
    """A fresh temporary path beside ``path`` for writers that need a file name (OpenMM, mdtraj)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix or ".tmp")
    os.close(fd)
    os.chmod(tmp, _default_file_mode())
    return Path(tmp)


def check_output_dir(path: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse an existing, non-empty output folder unless ``overwrite`` is set.

    Raises
    ------
    StarMDError
        If the folder exists, is not empty, and ``overwrite`` is False.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise StarMDError(f"output {path} exists and is not a folder: choose another path")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise StarMDError(f"output folder {path} already exists: pass --overwrite or choose another path")
    return path


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Build a folder under a temporary name and move it to ``path`` only when the block succeeds.

    Yields
    ------
    Path
        The temporary folder to write into.
    """
    path = check_output_dir(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    tmp.chmod(0o777 & ~_umask())  # as mkdir would make it; mkdtemp's 0700 hides results
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
