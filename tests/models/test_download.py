"""The one download (sampot_lib.files.download): resume, restart, checks, and what each failure leaves behind;
against a local HTTP server on 127.0.0.1. The registry's and the public sets' messages: test_registry.py and
test_data_public.py."""

import hashlib
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import sampot_lib
from sampot_lib.files import ChecksumError, DownloadError, download

PAYLOAD = bytes(range(256)) * 1024  # 256 KiB
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    """/full: the payload, Range honoured with 206 (416 from its end on); /norange: Range ignored (200, the whole
    file); /cut: promises the whole payload but sends half and closes. Records each request's Range header."""

    ranges: list[str] = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        rng = self.headers.get("Range", "")
        self.ranges.append(f"{self.path} {rng}".strip())
        start = int(rng.split("=")[1].rstrip("-")) if rng else 0
        if self.path == "/full" and start >= len(PAYLOAD):
            self.send_error(416)  # Range Not Satisfiable
            return
        if self.path == "/full" and start:
            self.send_response(206)
            body = PAYLOAD[start:]
        elif self.path in ("/full", "/norange", "/cut"):
            self.send_response(200)
            body = PAYLOAD
        else:
            self.send_error(404)
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path == "/cut":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    _Handler.ranges = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_a_checked_download_lands_whole_and_returns_its_sha256(server, tmp_path):
    path, digest = download(f"{server}/full", tmp_path / "w.bin", sha256=SHA.upper(), size=len(PAYLOAD))
    assert path == tmp_path / "w.bin" and path.read_bytes() == PAYLOAD and digest == SHA
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.bin"]


def test_a_part_is_resumed_with_a_range_request(server, tmp_path):
    (tmp_path / "w.bin.part").write_bytes(PAYLOAD[:100_000])
    path, _ = download(f"{server}/full", tmp_path / "w.bin", sha256=SHA, size=len(PAYLOAD))
    assert path.read_bytes() == PAYLOAD and _Handler.ranges == ["/full bytes=100000-"]
    assert not (tmp_path / "w.bin.part").exists()


def test_a_server_that_ignores_ranges_starts_over(server, tmp_path):
    (tmp_path / "w.bin.part").write_bytes(b"not the start of the file")
    path, _ = download(f"{server}/norange", tmp_path / "w.bin", sha256=SHA)
    assert path.read_bytes() == PAYLOAD


def test_a_part_longer_than_the_file_is_dropped_before_asking(server, tmp_path):
    (tmp_path / "w.bin.part").write_bytes(PAYLOAD + b"extra")
    download(f"{server}/full", tmp_path / "w.bin", size=len(PAYLOAD))
    assert _Handler.ranges == ["/full"]


def test_a_whole_part_left_before_its_check_is_checked_without_asking_again(server, tmp_path):
    (tmp_path / "w.bin.part").write_bytes(PAYLOAD)
    path, _ = download(f"{server}/full", tmp_path / "w.bin", sha256=SHA, size=len(PAYLOAD))
    assert path.read_bytes() == PAYLOAD and _Handler.ranges == []


def test_a_part_with_nothing_after_it_starts_over(server, tmp_path):
    (tmp_path / "w.bin.part").write_bytes(PAYLOAD + b"more")  # size unknown: the server answers 416 to its range
    path, _ = download(f"{server}/full", tmp_path / "w.bin", sha256=SHA)
    assert path.read_bytes() == PAYLOAD and _Handler.ranges == [f"/full bytes={len(PAYLOAD) + 4}-", "/full"]


def test_a_cut_connection_keeps_what_came_and_the_next_try_resumes(server, tmp_path):
    with pytest.raises(DownloadError) as err:
        download(f"{server}/cut", tmp_path / "w.bin", sha256=SHA, size=len(PAYLOAD))
    part = tmp_path / "w.bin.part"
    assert err.value.part == part and err.value.kept == len(PAYLOAD) // 2 == part.stat().st_size
    assert part.read_bytes() == PAYLOAD[: len(PAYLOAD) // 2] and not (tmp_path / "w.bin").exists()
    path, _ = download(f"{server}/full", tmp_path / "w.bin", sha256=SHA, size=len(PAYLOAD))
    assert path.read_bytes() == PAYLOAD and _Handler.ranges[-1] == f"/full bytes={len(PAYLOAD) // 2}-"


def test_no_connection_is_a_download_error_that_kept_nothing(tmp_path):
    with pytest.raises(DownloadError) as err:
        download("http://127.0.0.1:9/w.bin", tmp_path / "w.bin", timeout=5)  # port 9 (discard): refused
    assert err.value.kept == 0 and isinstance(err.value, OSError) and isinstance(err.value.__cause__, OSError)
    assert list(tmp_path.iterdir()) == []


def test_an_http_error_is_a_download_error(server, tmp_path):
    with pytest.raises(DownloadError, match="404") as err:
        download(f"{server}/missing", tmp_path / "w.bin")
    assert err.value.kept == 0 and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("kwargs", "what"), [({"sha256": "0" * 64}, "sha256"), ({"size": 1000}, "size")])
def test_the_wrong_file_is_refused_and_nothing_is_kept(server, tmp_path, kwargs, what):
    with pytest.raises(ChecksumError) as err:
        download(f"{server}/full", tmp_path / "w.bin", **kwargs)
    assert err.value.what == what and err.value.got == (SHA if what == "sha256" else len(PAYLOAD))
    assert list(tmp_path.iterdir()) == []  # neither the file nor a part that a resume would build on


def test_a_disk_error_is_the_os_error_naming_the_part(server, tmp_path):
    (tmp_path / "w.bin.part").mkdir()  # where the part goes, a folder: the write fails on this machine's side
    with pytest.raises(OSError) as err:
        download(f"{server}/full", tmp_path / "w.bin")
    assert not isinstance(err.value, DownloadError) and err.value.filename == str(tmp_path / "w.bin.part")


def test_file_urls_work_too(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    path, digest = download(src.as_uri(), tmp_path / "copy.bin")
    assert path.read_bytes() == PAYLOAD and digest == SHA


def test_one_downloader_one_rename_and_files_py_stands_alone():
    """files.py is layer 0: it imports nothing of sampot's; the package downloads, renames into place and hashes a
    file's bytes only through it."""
    root = Path(sampot_lib.__file__).parent
    files_py = (root / "files.py").read_text()
    assert not re.search(r"^\s*(from|import)\s+sampot_lib", files_py, re.M)
    for path in root.rglob("*.py"):
        text = path.read_text()
        where = path.relative_to(root).as_posix()
        assert text.count("os.replace(") == (1 if where == "files.py" else 0), where
        assert ("urlopen(" in text) == (where == "files.py"), where
