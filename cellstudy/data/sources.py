"""Find, verify and download the study's real data.

The data (CPJUMP1 sample images, design metadata, published results) live in
``<root>/cpjump1/``, described by ``<root>/cpjump1/manifest.csv``: one row per
file with its relative ``path``, size in ``bytes``, ``sha256`` and public ``url``.
Users without that folder get the same rows from the registry shipped with the
package (``cellstudy/data/registry.csv``, made by :func:`write_registry`), and
:func:`fetch` downloads what is missing, verifying every checksum.

The root is chosen by :func:`data_root`: an explicit path, else the environment
variable ``CELLSTUDY_DATA``, else a ``shared/data`` folder beside the repository's own folder when
it exists (one copy of the data for several checkouts), else the repository's own ``data/`` folder.
"""

from __future__ import annotations

import fnmatch
import hashlib
import http.client
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from cellstudy.files import atomic_path

DATASET = "cpjump1"
"""Sub-folder of the data root that holds the dataset and its manifest."""
ENV_VAR = "CELLSTUDY_DATA"
"""Environment variable that overrides the default data root."""
REPO_ROOT = Path(__file__).resolve().parents[2]
"""The repository (or installation) folder that contains the package."""
REGISTRY = Path(__file__).with_name("registry.csv")
"""Packaged copy of the manifest's ``path, bytes, sha256, url`` columns."""
REGISTRY_COLUMNS = ["path", "bytes", "sha256", "url"]
"""Manifest columns the package needs."""

_RETRYABLE = (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException)


class ChecksumError(ValueError):
    """A file's size or sha256 differs from the manifest."""


def local_root() -> Path:
    """The repository's own ``data/`` folder: fallback root and download cache."""
    return REPO_ROOT / "data"


def data_root(path: str | os.PathLike | None = None) -> Path:
    """Folder that holds ``cpjump1/``.

    Parameters
    ----------
    path
        Explicit root; wins over everything else.

    Returns
    -------
    ``path`` if given, else ``$CELLSTUDY_DATA`` if set, else ``shared/data`` beside the repository's folder
    if it exists, else ``<repo>/data``.
    """
    if path is not None:
        return Path(path).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    shared = REPO_ROOT.parent / "shared" / "data"
    return shared if shared.is_dir() else local_root()


def _read_table(source: str | os.PathLike) -> pd.DataFrame:
    """Read a manifest or registry CSV as text, checking that the needed columns exist."""
    table = pd.read_csv(source, dtype=str, keep_default_na=False)
    missing = [column for column in REGISTRY_COLUMNS if column not in table.columns]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}; expected at least {REGISTRY_COLUMNS}")
    return table


def load_manifest(root: str | os.PathLike | None = None) -> pd.DataFrame:
    """The dataset's file list: ``<root>/cpjump1/manifest.csv``, else the packaged registry.

    Returns a table with at least the columns ``path`` (relative to
    ``<root>/cpjump1/``), ``bytes``, ``sha256`` and ``url`` (empty for files
    without a public download); ``attrs["source"]`` names the file read.
    """
    manifest = data_root(root) / DATASET / "manifest.csv"
    source = manifest if manifest.is_file() else REGISTRY
    table = _read_table(source)
    table["bytes"] = table["bytes"].astype("int64")
    table.attrs["source"] = str(source)
    return table


def write_registry(manifest: str | os.PathLike, dest: str | os.PathLike = REGISTRY) -> Path:
    """Write the ``path, bytes, sha256, url`` columns of ``manifest`` to ``dest`` atomically."""
    dest = Path(dest)
    table = _read_table(manifest)
    with atomic_path(dest) as tmp:
        table[REGISTRY_COLUMNS].to_csv(tmp, index=False, lineterminator="\n")
    return dest


def sha256sum(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read ``chunk`` bytes at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_file(path: str | os.PathLike, sha256: str | None = None, size: int | None = None) -> None:
    """Raise :class:`ChecksumError` naming ``path`` if its size or sha256 differs.

    ``None`` skips the corresponding check; the size check is a cheap ``stat``.
    """
    actual_size = Path(path).stat().st_size
    if size is not None and actual_size != size:
        raise ChecksumError(f"{path}: size is {actual_size} bytes, expected {size}")
    if sha256 is not None and (actual := sha256sum(path)) != sha256:
        raise ChecksumError(f"{path}: sha256 is {actual}, expected {sha256}")


def _stream_to_part(url: str, part: Path, size: int | None, chunk: int, timeout: float) -> None:
    """Append the rest of ``url`` to ``part``, resuming with an HTTP Range request.

    Raises :class:`ConnectionError` if the connection ends before the announced length.
    """
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset >= size:
        return  # complete or too long: verification decides
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as response:
        if response.status != 206:
            offset = 0  # the server ignored the Range header and sends everything
        length = response.headers.get("Content-Length")
        expected = offset + int(length) if length is not None else size
        with (
            open(part, "ab" if offset else "wb") as out,
            tqdm(total=expected, initial=offset, unit="B", unit_scale=True, desc=part.stem, leave=False) as bar,
        ):
            while block := response.read(chunk):
                out.write(block)
                bar.update(len(block))
    received = part.stat().st_size
    if expected is not None and received < expected:
        raise ConnectionError(f"{url}: connection closed after {received} of {expected} bytes")


def download(
    url: str,
    dest: str | os.PathLike,
    sha256: str,
    size: int | None = None,
    chunk: int = 1 << 20,
    timeout: float = 60,
    retries: int = 3,
    backoff: float = 1.0,
) -> Path:
    """Download ``url`` to ``dest`` with resume, progress bar and checksum.

    Bytes go to ``dest`` + ``.part``; an existing ``.part`` is resumed with an
    HTTP ``Range`` request (a server that answers 200 instead of 206 restarts it
    from zero). Only a verified file is moved to ``dest`` (``os.replace``).

    Parameters
    ----------
    url
        Public HTTP(S) address of the file.
    dest
        Final path; parent folders are created.
    sha256
        Expected hex sha256 of the complete file.
    size
        Expected size in bytes, or ``None`` to trust the server's length.
    chunk
        Bytes read per network call.
    timeout
        Seconds to wait for the server on each connect or read.
    retries
        Extra attempts, each resuming the ``.part``, after a connection error or a
        server error (5xx); other HTTP errors are raised at once.
    backoff
        Seconds before the first retry, doubled for each further one.

    Raises
    ------
    ChecksumError
        The downloaded bytes differ from ``sha256`` or ``size``; the ``.part`` is deleted.
    """
    dest = Path(dest)
    part = dest.with_suffix(dest.suffix + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(retries + 1):
        try:
            _stream_to_part(url, part, size, chunk, timeout)
            break
        except _RETRYABLE as err:
            client_error = isinstance(err, urllib.error.HTTPError) and err.code < 500
            if client_error or attempt == retries:
                raise
            time.sleep(backoff * 2**attempt)
    try:
        verify_file(part, sha256, size)
    except ChecksumError as err:
        part.unlink()
        raise ChecksumError(f"download of {url} to {dest} is corrupt and was deleted: {err}") from None
    os.replace(part, dest)
    return dest


def _is_writable(folder: Path) -> bool:
    """Whether files can be created under ``folder`` (its nearest existing ancestor).

    Checks the permission bits as well as :func:`os.access`, so a read-only
    folder stays untouched even for the superuser.
    """
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    return os.access(existing, os.W_OK) and bool(existing.stat().st_mode & 0o222)


def _manifest_entry(manifest: pd.DataFrame, relpath: str) -> pd.Series:
    """The manifest row for ``relpath``."""
    rows = manifest[manifest["path"] == relpath]
    if rows.empty:
        raise KeyError(f"{relpath!r} is not listed in {manifest.attrs['source']}")
    return rows.iloc[0]


def _fetch_entry(entry: pd.Series, root: Path, cache: Path, download_missing: bool, verify: bool) -> Path:
    """Local path of one manifest entry, downloading it if allowed."""
    candidates = list(dict.fromkeys([root / DATASET / entry["path"], cache / DATASET / entry["path"]]))
    for path in candidates:
        if path.is_file():
            verify_file(path, entry["sha256"] if verify else None, entry["bytes"])
            return path
    where = " or ".join(str(path) for path in candidates)
    if not entry["url"]:
        raise FileNotFoundError(f"{entry['path']}: not found at {where}, and it has no public download URL")
    if not download_missing:
        raise FileNotFoundError(
            f"{entry['path']}: not found at {where}; download it from {entry['url']} "
            f"(fetch(..., download=True)) or set {ENV_VAR} to a folder that holds {DATASET}/"
        )
    dest_root = root if _is_writable(root / DATASET) else cache
    return download(entry["url"], dest_root / DATASET / entry["path"], entry["sha256"], entry["bytes"])


def fetch(
    relpath: str | os.PathLike,
    root: str | os.PathLike | None = None,
    download: bool = True,
    verify: bool = False,
    cache: str | os.PathLike | None = None,
) -> Path:
    """Local path of one dataset file, downloading it when missing.

    Parameters
    ----------
    relpath
        Path relative to ``<root>/cpjump1/``, as in the manifest.
    root
        Data root; see :func:`data_root`.
    download
        Download a missing file from its manifest URL; if ``False``, raise instead.
    verify
        Check the sha256 of an existing file (its size is always checked).
    cache
        Where files go when ``root`` is read-only (default ``<repo>/data``); also
        searched for files missing from ``root``.

    Raises
    ------
    FileNotFoundError
        The file is missing and cannot or may not be downloaded.
    KeyError
        ``relpath`` is not in the manifest.
    ChecksumError
        The file's size (or, with ``verify``, sha256) differs from the manifest.
    """
    root = data_root(root)
    cache = Path(cache) if cache is not None else local_root()
    entry = _manifest_entry(load_manifest(root), Path(relpath).as_posix())
    return _fetch_entry(entry, root, cache, download, verify)


def fetch_all(
    pattern: str | None = None,
    root: str | os.PathLike | None = None,
    download: bool = True,
    verify: bool = False,
    cache: str | os.PathLike | None = None,
) -> list[Path]:
    """Local paths of all manifest files whose path matches the glob ``pattern``.

    ``pattern`` (e.g. ``"images/FK-866/*"``) is matched with :mod:`fnmatch`;
    ``None`` selects every file. The other parameters are as in :func:`fetch`.
    """
    root = data_root(root)
    cache = Path(cache) if cache is not None else local_root()
    manifest = load_manifest(root)
    if pattern is not None:
        manifest = manifest[[fnmatch.fnmatch(path, pattern) for path in manifest["path"]]]
    return [
        _fetch_entry(entry, root, cache, download, verify)
        for _, entry in tqdm(manifest.iterrows(), total=len(manifest), desc=DATASET, unit="file")
    ]


def sample_fields(root: str | os.PathLike | None = None, download: bool = True) -> pd.DataFrame:
    """The real CPJUMP1 sample fields of view, fetched when missing.

    One row per field: ``compound`` (the folder name under ``images/``), ``well``, ``field``,
    ``folder`` (read it with :func:`cellstudy.data.images.read_field`).
    """
    from cellstudy.data.images import parse_name, well_id

    paths = fetch_all("images/*", root=root, download=download)
    rows = {}
    for path in paths:
        name = parse_name(path.name)
        well = well_id(name.row, name.col)
        rows[(path.parent.name, well, name.field)] = {
            "compound": path.parent.name,
            "well": well,
            "field": name.field,
            "folder": str(path.parent),
        }
    return pd.DataFrame(list(rows.values())).sort_values(["compound", "well"], ignore_index=True)


def metadata_folder(root: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The folder of the CPJUMP1 design tables (``metadata/`` of the manifest), each fetched when missing."""
    paths = fetch_all("metadata/*", root=root, download=download)
    folders = {path.parent for path in paths}
    if len(folders) != 1:
        raise FileNotFoundError(f"the CPJUMP1 metadata files are not in one folder: {sorted(map(str, folders))}")
    return folders.pop()
