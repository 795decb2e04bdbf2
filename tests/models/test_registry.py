"""Checkpoint download, resume, verification and loading, against a local HTTP server on 127.0.0.1."""

import hashlib
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from conftest import build_tiny_sam

from sampot_lib import SampotError
from sampot_lib.models import Checkpoint, build_sam, fetch_checkpoint, load_model
from sampot_lib.models import registry as reg

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class _RangeHandler(SimpleHTTPRequestHandler):
    """Serves files, honours "Range: bytes=N-" with 206, and counts requests per path."""

    hits: dict[str, list[str]] = {}

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.hits.setdefault(self.path, []).append(self.headers.get("Range", ""))
        rng = self.headers.get("Range")
        if rng and self.path.startswith("/ranged/"):
            data = (self.directory_path / self.path.split("/")[-1]).read_bytes()
            start = int(rng.split("=")[1].rstrip("-"))
            self.send_response(206)
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            self.wfile.write(data[start:])
            return
        if self.path.startswith("/ranged/"):
            self.path = "/" + self.path.split("/")[-1]
        super().do_GET()


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "weights.bin").write_bytes(PAYLOAD)
    (root / "wrong.bin").write_bytes(PAYLOAD[:-1] + b"\x00")
    handler = partial(_RangeHandler, directory=str(root))
    _RangeHandler.directory_path = root
    _RangeHandler.hits = {}
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _ckpt(url: str, name: str = "weights.bin", data: bytes = PAYLOAD) -> Checkpoint:
    return Checkpoint("test", "vit_b", name, hashlib.sha256(data).hexdigest(), len(data), url=url)


def test_download_verifies_and_caches(server, tmp_path):
    cache = tmp_path / "cache"
    path = fetch_checkpoint(_ckpt(f"{server}/weights.bin"), cache_dir=cache, progress=False)
    assert path.read_bytes() == PAYLOAD and path.parent == cache
    assert sorted(p.name for p in cache.iterdir()) == ["weights.bin"]
    fetch_checkpoint(_ckpt(f"{server}/weights.bin"), cache_dir=cache, progress=False)
    assert len(_RangeHandler.hits["/weights.bin"]) == 1  # the second call used the cache


def test_interrupted_download_resumes_with_range(server, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "weights.bin.part").write_bytes(PAYLOAD[:300_000])
    path = fetch_checkpoint(_ckpt(f"{server}/ranged/weights.bin"), cache_dir=cache, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert _RangeHandler.hits["/ranged/weights.bin"] == ["bytes=300000-"]
    assert not (cache / "weights.bin.part").exists()


def test_server_without_ranges_restarts_cleanly(server, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "weights.bin.part").write_bytes(b"garbage that must not be kept")
    path = fetch_checkpoint(_ckpt(f"{server}/weights.bin"), cache_dir=cache, progress=False)
    assert path.read_bytes() == PAYLOAD


def test_wrong_download_is_refused_and_removed(server, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(SampotError, match="corrupt: sha256"):
        fetch_checkpoint(_ckpt(f"{server}/wrong.bin", name="weights.bin"), cache_dir=cache, progress=False)
    assert list(cache.iterdir()) == []  # neither a final file nor a part that could be resumed


def test_corrupt_cached_file_is_detected(server, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "weights.bin").write_bytes(PAYLOAD[:-1] + b"\x01")
    with pytest.raises(SampotError, match="corrupt"):
        fetch_checkpoint(_ckpt(f"{server}/weights.bin"), cache_dir=cache, progress=False)
    (cache / "weights.bin").write_bytes(PAYLOAD[:1000])
    with pytest.raises(SampotError, match="incomplete") as err:
        fetch_checkpoint(_ckpt(f"{server}/weights.bin"), cache_dir=cache, progress=False)
    name = _ckpt(f"{server}/weights.bin").name
    assert f"run `sampot download {name} --cache-dir {cache}` again" in str(err.value)  # the advice keeps the cache


def test_offline_error_says_where_to_put_the_file(tmp_path):
    ckpt = _ckpt("http://127.0.0.1:9/weights.bin")  # port 9 (discard): connection refused
    with pytest.raises(SampotError, match=r"put it at .*weights\.bin") as err:
        fetch_checkpoint(ckpt, cache_dir=tmp_path, progress=False, timeout=5)
    assert ckpt.sha256 in str(err.value) and "pass --checkpoint" not in str(err.value)  # download has no such option
    assert "give it to evolve, run and the other commands with --checkpoint PATH" in str(err.value)


def test_real_registry_records_are_complete():
    for name in ("vit_b", "vit_l", "vit_h"):
        ckpt = reg.CHECKPOINTS[name]
        assert ckpt.url.startswith("https://") and len(ckpt.sha256) == 64 and ckpt.size > 300_000_000
        assert ckpt.url.endswith(ckpt.filename)


def test_checkpoint_of_the_wrong_model_type(tmp_path, monkeypatch):
    path = tmp_path / "tiny.pth"
    torch.save(build_tiny_sam().state_dict(), path)
    monkeypatch.setitem(reg.MODEL_BUILDERS, "tiny", build_tiny_sam)
    assert isinstance(build_sam("tiny", path), torch.nn.Module)
    with pytest.raises(SampotError, match="does not fit model type 'vit_b'"):
        build_sam("vit_b", path)
    torch.save({"image_encoder.blocks.0.weight": torch.zeros(2)}, tmp_path / "other.pth")  # no SAM's patch embedding
    with pytest.raises(SampotError, match="is not a SAM checkpoint sampot can read .* --model litemedsam") as err:
        build_sam("tiny", tmp_path / "other.pth")
    assert "--model unknown" not in str(err.value)
    (tmp_path / "bad.pth").write_bytes(b"\x00" * 100)
    with pytest.raises(SampotError, match="damaged .* or not a PyTorch file"):
        build_sam("tiny", tmp_path / "bad.pth")
    model = load_model("tiny", checkpoint=path, mask_output=1)
    assert model.mask_output == 1 and model.name == "tiny"


def test_unknown_names_and_devices(tmp_path):
    with pytest.raises(SampotError, match="unknown model"):
        load_model("vit_x")
    with pytest.raises(SampotError, match="unknown model 'vit_z'; known: litemedsam, sam_nano, vit_b, vit_h, vit_l.$"):
        fetch_checkpoint("vit_z", cache_dir=tmp_path)  # what `sampot download` takes; no checkpoint path there
    (tmp_path / "file").write_text("x")
    with pytest.raises(SampotError, match="cache_dir .*file is a file, not a folder"):
        load_model("vit_b", cache_dir=tmp_path / "file")  # was a raw FileExistsError
    with pytest.raises(SampotError, match="does not exist"):
        load_model("vit_b", checkpoint=tmp_path / "none.pth")
    if not torch.cuda.is_available():
        with pytest.raises(SampotError, match="no CUDA GPU"):
            load_model("vit_b", checkpoint=tmp_path / "none.pth", device="cuda")
