"""Atomic file output: whole files or none, whatever interrupts the writer (kill -9 included)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def fsync_path(path: str | Path) -> None:
    """fsync a file or a directory by path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_output(path: str | Path, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temp path beside ``path``; once the block succeeds the temp file is fsync'ed,
    renamed onto ``path`` (atomic on POSIX) and the directory fsync'ed; on any error it is
    removed. The temp name is ``.NAME.tmp``, or ``.STEM.tmpSUFFIX`` with ``keep_suffix`` for
    writers that infer the format from the suffix (matplotlib, imageio); readers skip dotfiles."""
    path = Path(path)
    name = f".{path.stem}.tmp{path.suffix}" if keep_suffix else f".{path.name}.tmp"
    tmp = path.with_name(name)
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, path)
        fsync_path(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
