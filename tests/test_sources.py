"""Tests for cellstudy.data.sources against a real HTTP server on loopback and the real shared data."""

from __future__ import annotations

import csv
import hashlib
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cellstudy.data import sources

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SHARED_MANIFEST = SHARED / "cpjump1" / "manifest.csv"
needs_shared = pytest.mark.skipif(not SHARED_MANIFEST.is_file(), reason="shared data folder absent")

PAYLOAD = bytes(range(256)) * 40 + b"tail"  # 10,244 bytes, not a multiple of the chunk size
CHUNK = 1000


class RangeHandler(BaseHTTPRequestHandler):
    """Serves ``server.files`` with ``Range: bytes=N-`` support and planted faults.

    ``server.cut_after``: on the next request, send only that many body bytes and hang up.
    ``server.ignore_range``: answer every request with 200 and the whole file.
    Every request's Range header (or ``None``) is appended to ``server.ranges``.
    """

    def do_GET(self) -> None:
        server = self.server
        requested = self.headers.get("Range")
        server.ranges.append(requested)
        body = server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        if requested and not server.ignore_range:
            start = int(requested.removeprefix("bytes=").removesuffix("-"))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if server.cut_after is not None:
            payload, server.cut_after = payload[: server.cut_after], None
            self.close_connection = True
        self.wfile.write(payload)

    def log_message(self, *args) -> None:
        """Keep test output quiet."""


@pytest.fixture
def server():
    """A loopback ThreadingHTTPServer on a free port; ``server.url(name)`` builds addresses."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    httpd.files, httpd.ranges, httpd.cut_after, httpd.ignore_range = {}, [], None, False
    httpd.url = lambda name: f"http://127.0.0.1:{httpd.server_address[1]}/{name}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.rglob("*") if path.is_file())


def test_download_writes_verified_file(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    dest = tmp_path / "sub" / "a.bin"
    assert sources.download(server.url("a.bin"), dest, sha(PAYLOAD), len(PAYLOAD), chunk=CHUNK) == dest
    assert dest.read_bytes() == PAYLOAD
    assert leftovers(tmp_path) == ["a.bin"]
    assert server.ranges == [None]


def test_download_corrupted_byte_raises_and_leaves_nothing(server, tmp_path):
    corrupted = bytearray(PAYLOAD)
    corrupted[5000] ^= 0x01
    server.files["/a.bin"] = bytes(corrupted)
    dest = tmp_path / "a.bin"
    with pytest.raises(sources.ChecksumError) as info:
        sources.download(server.url("a.bin"), dest, sha(PAYLOAD), len(PAYLOAD), chunk=CHUNK)
    message = str(info.value)
    assert str(dest) in message and sha(PAYLOAD) in message and sha(bytes(corrupted)) in message
    assert leftovers(tmp_path) == []


def test_download_wrong_size_raises(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    with pytest.raises(sources.ChecksumError, match=f"expected {len(PAYLOAD) + 1}"):
        sources.download(server.url("a.bin"), tmp_path / "a.bin", sha(PAYLOAD), len(PAYLOAD) + 1)
    assert leftovers(tmp_path) == []


def test_interrupted_download_resumes_with_range(server, tmp_path):
    cut = 3333
    server.files["/a.bin"] = PAYLOAD
    server.cut_after = cut
    dest = tmp_path / "a.bin"
    sources.download(server.url("a.bin"), dest, sha(PAYLOAD), len(PAYLOAD), chunk=CHUNK, backoff=0)
    assert server.ranges == [None, f"bytes={cut}-"]
    assert dest.read_bytes() == PAYLOAD
    assert leftovers(tmp_path) == ["a.bin"]


def test_interrupted_download_without_retries_keeps_part_for_next_call(server, tmp_path):
    cut = 4000
    server.files["/a.bin"] = PAYLOAD
    server.cut_after = cut
    dest = tmp_path / "a.bin"
    with pytest.raises(ConnectionError, match=f"after {cut} of {len(PAYLOAD)} bytes"):
        sources.download(server.url("a.bin"), dest, sha(PAYLOAD), chunk=CHUNK, retries=0)
    assert (tmp_path / "a.bin.part").read_bytes() == PAYLOAD[:cut]
    assert not dest.exists()
    sources.download(server.url("a.bin"), dest, sha(PAYLOAD), chunk=CHUNK)
    assert server.ranges == [None, f"bytes={cut}-"]
    assert dest.read_bytes() == PAYLOAD


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    server.ignore_range = True
    (tmp_path / "a.bin.part").write_bytes(b"stale bytes from another version")
    dest = tmp_path / "a.bin"
    sources.download(server.url("a.bin"), dest, sha(PAYLOAD), len(PAYLOAD), chunk=CHUNK)
    assert server.ranges == ["bytes=32-"]
    assert dest.read_bytes() == PAYLOAD
    assert leftovers(tmp_path) == ["a.bin"]


def test_http_not_found_is_not_retried(server, tmp_path):
    with pytest.raises(urllib.error.HTTPError) as info:
        sources.download(server.url("missing.bin"), tmp_path / "m.bin", sha(b""), backoff=0)
    assert info.value.code == 404
    assert len(server.ranges) == 1


def write_manifest(root: Path, rows: list[dict]) -> Path:
    """A minimal ``<root>/cpjump1/manifest.csv`` with the given rows."""
    path = root / "cpjump1" / "manifest.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=["path", "bytes", "sha256", "url"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_fetch_missing_without_download_names_the_file(tmp_path):
    root, cache = tmp_path / "root", tmp_path / "cache"
    write_manifest(root, [{"path": "x/a.bin", "bytes": 3, "sha256": sha(b"abc"), "url": "http://127.0.0.1:9/a"}])
    with pytest.raises(FileNotFoundError, match=r"x/a\.bin.*http://127\.0\.0\.1:9/a"):
        sources.fetch("x/a.bin", root=root, download=False, cache=cache)


def test_fetch_unknown_path_raises_key_error(tmp_path):
    write_manifest(tmp_path, [])
    with pytest.raises(KeyError, match="nope.csv"):
        sources.fetch("nope.csv", root=tmp_path, cache=tmp_path)


def test_fetch_downloads_into_writable_root(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    root, cache = tmp_path / "root", tmp_path / "cache"
    write_manifest(
        root, [{"path": "x/a.bin", "bytes": len(PAYLOAD), "sha256": sha(PAYLOAD), "url": server.url("a.bin")}]
    )
    path = sources.fetch("x/a.bin", root=root, cache=cache)
    assert path == root / "cpjump1" / "x" / "a.bin"
    assert path.read_bytes() == PAYLOAD
    assert not cache.exists()
    assert sources.fetch("x/a.bin", root=root, cache=cache, download=False, verify=True) == path
    assert len(server.ranges) == 1


def test_fetch_from_read_only_root_downloads_into_cache(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    root, cache = tmp_path / "root", tmp_path / "cache"
    folder = write_manifest(
        root, [{"path": "a.bin", "bytes": len(PAYLOAD), "sha256": sha(PAYLOAD), "url": server.url("a.bin")}]
    ).parent
    folder.chmod(0o555)
    try:
        paths = sources.fetch_all(root=root, cache=cache)
    finally:
        folder.chmod(0o755)
    assert paths == [cache / "cpjump1" / "a.bin"]
    assert paths[0].read_bytes() == PAYLOAD
    assert leftovers(folder) == ["manifest.csv"]


def test_fetch_detects_corrupt_local_file(tmp_path):
    root = tmp_path
    write_manifest(root, [{"path": "a.bin", "bytes": 3, "sha256": sha(b"abc"), "url": ""}])
    (root / "cpjump1" / "a.bin").write_bytes(b"abd")
    assert sources.fetch("a.bin", root=root, cache=root, download=False) == root / "cpjump1" / "a.bin"
    with pytest.raises(sources.ChecksumError, match=sha(b"abc")):
        sources.fetch("a.bin", root=root, cache=root, download=False, verify=True)
    (root / "cpjump1" / "a.bin").write_bytes(b"abcd")
    with pytest.raises(sources.ChecksumError, match="size is 4 bytes, expected 3"):
        sources.fetch("a.bin", root=root, cache=root, download=False)


def test_fetch_without_url_says_so(tmp_path):
    write_manifest(tmp_path, [{"path": "a.bin", "bytes": 3, "sha256": sha(b"abc"), "url": ""}])
    with pytest.raises(FileNotFoundError, match="a.bin.*no public download URL"):
        sources.fetch("a.bin", root=tmp_path, cache=tmp_path)


def test_manifest_missing_column_names_file_and_column(tmp_path):
    path = tmp_path / "cpjump1" / "manifest.csv"
    path.parent.mkdir()
    path.write_text("path,bytes,url\na,1,u\n")
    with pytest.raises(ValueError, match=r"manifest\.csv.*sha256"):
        sources.load_manifest(tmp_path)


def test_load_manifest_falls_back_to_packaged_registry(tmp_path):
    manifest = sources.load_manifest(tmp_path)
    assert manifest.attrs["source"] == str(sources.REGISTRY)
    with open(sources.REGISTRY, newline="") as stream:
        assert manifest["path"].tolist() == [row["path"] for row in csv.DictReader(stream)]


def test_data_root_precedence(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    monkeypatch.setattr(sources, "REPO_ROOT", repo)
    monkeypatch.delenv(sources.ENV_VAR, raising=False)
    assert sources.data_root() == repo / "data"
    shared = tmp_path / "shared" / "data"
    shared.mkdir(parents=True)
    assert sources.data_root() == shared
    monkeypatch.setenv(sources.ENV_VAR, str(tmp_path / "env"))
    assert sources.data_root() == tmp_path / "env"
    assert sources.data_root(tmp_path / "arg") == tmp_path / "arg"


def test_write_registry_keeps_registry_columns(tmp_path):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        'path,bytes,sha256,repo,url,note\na/b.tif,12,ff00,org/r,https://x/b.tif,"a, note"\nc.csv,7,00ff,org/r,,\n'
    )
    dest = sources.write_registry(manifest, tmp_path / "registry.csv")
    assert dest.read_text() == "path,bytes,sha256,url\na/b.tif,12,ff00,https://x/b.tif\nc.csv,7,00ff,\n"
    assert leftovers(tmp_path) == ["manifest.csv", "registry.csv"]


@needs_shared
def test_packaged_registry_matches_shared_manifest():
    columns = ["path", "bytes", "sha256", "url"]
    with open(SHARED_MANIFEST, newline="") as stream:
        expected = [[row[column] for column in columns] for row in csv.DictReader(stream)]
    with open(sources.REGISTRY, newline="") as stream:
        rows = list(csv.reader(stream))
    assert rows[0] == columns
    assert rows[1:] == expected


@needs_shared
def test_fetch_shared_data_without_network(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("fetch tried to use the network")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.delenv(sources.ENV_VAR, raising=False)
    relpath = "metadata/barcode_platemap.csv"
    path = sources.fetch(relpath, verify=True)
    assert path == SHARED / "cpjump1" / relpath
    with open(SHARED_MANIFEST, newline="") as stream:
        row = next(row for row in csv.DictReader(stream) if row["path"] == relpath)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == row["sha256"]
    paths = sources.fetch_all(download=False)
    assert len(paths) == len(sources.load_manifest()) and all(p.is_relative_to(SHARED) and p.is_file() for p in paths)
    assert sorted(sources.fetch_all("images/FK-866/*", download=False)) == sorted(
        (SHARED / "cpjump1" / "images" / "FK-866").glob("*.tiff")
    )


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared data not available")
def test_sample_fields_lists_the_ten_real_fields_from_the_readme():
    fields = sources.sample_fields(SHARED, download=False)
    assert len(fields) == 10
    assert fields.groupby("compound")["well"].apply(sorted)["FK-866"] == ["D08", "L09"]
    assert dict(zip(fields["compound"], fields["well"]))["DMSO"] == "D14"
    assert set(fields["field"]) == {5}


def test_metadata_folder_fetches_the_design_tables_into_one_folder(server, tmp_path):
    rows = []
    for name in ("metadata/a.tsv", "metadata/b.tsv", "images/x.tiff"):
        server.files[f"/{name}"] = name.encode()
        rows.append({"path": name, "bytes": len(name), "sha256": sha(name.encode()), "url": server.url(name)})
    root = tmp_path / "root"
    write_manifest(root, rows)
    folder = sources.metadata_folder(root)
    assert folder == root / "cpjump1" / "metadata"
    assert sorted(p.name for p in folder.iterdir()) == ["a.tsv", "b.tsv"]
    assert not (root / "cpjump1" / "images").exists()  # only the design tables are fetched
