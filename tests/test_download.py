"""The download command against an HTTP server on 127.0.0.1 that serves fake files."""
import hashlib
import http.server
import threading

import pytest

from clipnotes import download as DL
from clipnotes.utils import ClipnotesError

PAYLOAD = bytes(range(256)) * 4096              # 1 MiB of fake data
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    cut_after: int | None = None                # drop the connection after this many bytes, once
    requests: list = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        type(self).requests.append(self.headers.get("Range"))
        if self.path != "/data.bin":
            self.send_error(404)
            return
        start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
        body = PAYLOAD[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = type(self).cut_after
        if cut is not None:
            type(self).cut_after = None
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.connection.close()
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    _Handler.cut_after, _Handler.requests = None, []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


pytestmark = pytest.mark.enable_socket


def test_an_interrupted_transfer_resumes_and_is_verified(server, tmp_path):
    remote = DL.Remote(f"{server}/data.bin", "fake/data.bin", len(PAYLOAD), SHA)
    _Handler.cut_after = 300_000
    with pytest.raises(ClipnotesError, match="rerun to resume"):
        DL.fetch(remote, tmp_path, quiet=True)
    assert not (tmp_path / "fake/data.bin").exists() and (tmp_path / "fake/data.bin.part").stat().st_size == 300_000
    path = DL.fetch(remote, tmp_path, quiet=True)
    assert path.read_bytes() == PAYLOAD and _Handler.requests[-1] == "bytes=300000-"
    assert not (tmp_path / "fake/data.bin.part").exists()
    n = len(_Handler.requests)
    assert DL.fetch(remote, tmp_path, quiet=True) == path and len(_Handler.requests) == n   # offline first


def test_a_wrong_checksum_is_refused_and_the_file_removed(server, tmp_path):
    remote = DL.Remote(f"{server}/data.bin", "fake/data.bin", None, "0" * 64)
    with pytest.raises(ClipnotesError, match="failed its sha256 check"):
        DL.fetch(remote, tmp_path, quiet=True)
    assert list((tmp_path / "fake").iterdir()) == []


def test_without_a_published_checksum_the_first_download_is_recorded(server, tmp_path):
    remote = DL.Remote(f"{server}/data.bin", "fake/data.bin")
    DL.download([remote], tmp_path, quiet=True)
    assert DL.expected_sha256(remote, tmp_path) == SHA
    (tmp_path / "fake/data.bin").write_bytes(b"tampered")
    with pytest.raises(ClipnotesError, match="does not match its checksum"):
        DL.fetch(remote, tmp_path, quiet=True)


def test_a_missing_host_and_a_full_disk_are_one_line(server, tmp_path, monkeypatch):
    with pytest.raises(ClipnotesError, match="cannot reach 127.0.0.1:9"):
        DL.fetch(DL.Remote("http://127.0.0.1:9/data.bin", "x.bin"), tmp_path, timeout=5, quiet=True)
    with pytest.raises(ClipnotesError, match="answered 404"):
        DL.fetch(DL.Remote(f"{server}/moved.bin", "y.bin"), tmp_path, quiet=True)
    monkeypatch.setattr(DL.shutil, "disk_usage", lambda p: type("u", (), {"free": 1000})())
    with pytest.raises(ClipnotesError, match="not enough disk space"):
        DL.fetch(DL.Remote(f"{server}/data.bin", "z.bin", size=len(PAYLOAD)), tmp_path, quiet=True)
    assert not (tmp_path / "z.bin").exists()


def test_chapter_needs_and_files_that_must_be_fetched_by_hand(tmp_path):
    from clipnotes.profiles import get_profile
    assert DL.needs(["5"]) == ["cifar10", "cifar10-shifts", "weights:ViT-B-32-quickgelu"]
    assert "pacs" in DL.needs(["all"]) and DL.needs([]) == DL.needs(["all"])
    with pytest.raises(ClipnotesError, match="no chapter 42"):
        DL.needs(["42"])
    prof = get_profile("paper", check=False).__class__(**{**get_profile("paper", check=False).__dict__,
                                                        "data_dir": tmp_path})
    assert DL.fetch_need("pacs", prof).startswith("by hand PACS")
    assert "DATASETS.md" in DL.fetch_need("coop-split:EuroSAT", prof)


def test_every_chapter_after_the_mini_world_says_what_its_paper_path_reads():
    """A new chapter gets its line in CHAPTER_NEEDS (chapter 0 is the mini world alone)."""
    from pathlib import Path
    notebooks = Path(__file__).resolve().parents[1] / "notebooks"
    numbers = sorted(p.name[:2] for p in notebooks.glob("[0-9][0-9]_*.ipynb") if p.name[:2] != "00")
    assert sorted(DL.CHAPTER_NEEDS) == numbers


def test_the_cifar10_shifts_arrive_in_the_layout_the_loader_reads(server, tmp_path, monkeypatch):
    """The real chain on fake files: served over loopback, fetched, then read by data.cifar10_shift."""

    import numpy as np

    from clipnotes import data
    from clipnotes.fakes import write_fake_cifar10_shifts
    write_fake_cifar10_shifts(tmp_path / "src", n=5)
    files = {f"/{p.relative_to(tmp_path / 'src')}": p.read_bytes() for p in (tmp_path / "src").rglob("*.npy")}

    class Files(_Handler):
        def do_GET(self):
            body = files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Files)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    remotes = tuple(DL.Remote(f"{base}/{r.path}", r.path) for r in DL.CIFAR10_SHIFT_FILES)
    monkeypatch.setattr(DL, "CIFAR10_SHIFT_FILES", remotes)
    DL.download(DL.CIFAR10_SHIFT_FILES, tmp_path / "data", quiet=True)
    httpd.shutdown()
    for name in ("cifar10.1", "cifar10.2"):
        ds = data.cifar10_shift(name, tmp_path / "data")
        assert len(ds) == 5 and ds.images(np.arange(2)).shape == (2, 3, 32, 32)
    assert len(DL._recorded(tmp_path / "data")) == 3            # none published for these fakes: recorded
