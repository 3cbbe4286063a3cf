"""Writing files so that nothing half-written is ever left behind."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

FILE_MODE = 0o644
"""Permissions of finished files (temporary files are created private, 0600)."""


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path``, renamed onto ``path`` when the block succeeds.

    If the block raises, the temporary file is removed and ``path`` is untouched. The folder is
    created if needed. Usage::

        with atomic_path("table.csv") as tmp:
            frame.to_csv(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False) as tmp:
        temp_path = Path(tmp.name)
    try:
        yield temp_path
        os.chmod(temp_path, FILE_MODE)
        os.replace(temp_path, path)
    finally:
        temp_path.unlink(missing_ok=True)
