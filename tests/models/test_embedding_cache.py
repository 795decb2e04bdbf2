"""Embeddings on disk: one encoder pass per (image, model weights), never a stale or damaged entry served."""

import numpy as np
import pytest
import torch
from conftest import build_tiny_sam, disk_image

from sampot_lib import SampotError
from sampot_lib.errors import SampotWarning
from sampot_lib.models import SamModel
from sampot_lib.models.cache import EmbeddingStore


def _counting(model: SamModel) -> list[int]:
    calls = [0]
    encode = model._encode

    def counted(rgb):
        calls[0] += 1
        return encode(rgb)

    model._encode = counted
    return calls


def test_each_image_is_encoded_once_across_models_and_runs(tmp_path):
    store = EmbeddingStore(tmp_path / "emb")
    images = [disk_image(seed=k)[0] for k in range(3)]
    first = SamModel(build_tiny_sam(), name="tiny").use_store(store)
    calls = _counting(first)
    direct = [first.embed(im).features.clone() for im in images]
    assert calls[0] == 3
    second = SamModel(build_tiny_sam(), name="tiny", cache_size=0).use_store(EmbeddingStore(tmp_path / "emb"))
    calls2 = _counting(second)
    for _ in range(2):  # a new process, twice: every embedding comes from disk
        for im, want in zip(images, direct, strict=True):
            torch.testing.assert_close(second.embed(im).features, want, rtol=0, atol=0)
    assert calls2[0] == 0


def test_other_weights_or_pixels_are_never_served_a_stale_entry(tmp_path):
    store = EmbeddingStore(tmp_path / "emb")
    image, _ = disk_image()
    a = SamModel(build_tiny_sam(seed=0), name="tiny").use_store(store)
    b = SamModel(build_tiny_sam(seed=1), name="tiny").use_store(store)  # same name, other weights
    calls = _counting(b)
    fa, fb = a.embed(image).features, b.embed(image).features
    assert calls[0] == 1 and not torch.equal(fa, fb)
    changed = image.copy()
    changed[0, 0] ^= 1  # one pixel differs
    b.embed(changed)
    assert calls[0] == 2


def test_a_damaged_entry_is_recomputed(tmp_path):
    store = EmbeddingStore(tmp_path / "emb")
    image, _ = disk_image()
    model = SamModel(build_tiny_sam(), name="tiny", cache_size=0).use_store(store)
    want = model.embed(image).features.clone()
    (entry,) = list((tmp_path / "emb").rglob("*.safetensors"))
    entry.write_bytes(entry.read_bytes()[:50])  # cut short
    calls = _counting(model)
    with pytest.warns(UserWarning, match="unreadable"):
        got = model.embed(image).features
    assert calls[0] == 1
    torch.testing.assert_close(got, want)
    assert not list((tmp_path / "emb").rglob("*.tmp"))


def test_a_file_where_the_store_should_be_is_named(tmp_path):
    (tmp_path / "emb").write_text("")
    with pytest.raises(SampotError, match="is a file, not a folder"):
        EmbeddingStore(tmp_path / "emb")


def test_load_model_uses_the_folder_from_the_environment(tmp_path, monkeypatch):
    from sampot_lib.models import load_model

    monkeypatch.setenv("SAMPOT_EMBEDDINGS", str(tmp_path / "emb"))
    model = load_model("sam_nano")
    model.embed(np.zeros((32, 32), np.uint8))
    assert len(list((tmp_path / "emb").rglob("*.safetensors"))) == 1


@pytest.mark.parametrize(
    "damage, why",
    [
        (lambda t: {**t, "features": t["features"][:, :, :-1]}, "holds features of shape"),
        (lambda t: {**t, "features": t["features"][:, :1]}, "holds features of shape"),
        (lambda t: {**t, "input_size": t["input_size"] + 8}, "records input size"),
        (lambda t: {**t, "features": t["features"] * float("nan")}, "not finite floats"),
        (lambda t: {"features": t["features"]}, "unreadable"),
    ],
)
def test_a_wrong_shaped_or_damaged_entry_is_named_and_recomputed(tmp_path, damage, why):
    from safetensors.torch import load_file, save_file

    store = EmbeddingStore(tmp_path / "emb")
    image, _ = disk_image()
    model = SamModel(build_tiny_sam(), name="tiny", cache_size=0).use_store(store)
    want = model.embed(image)
    (entry,) = list((tmp_path / "emb").rglob("*.safetensors"))
    save_file({k: v.contiguous() for k, v in damage(load_file(str(entry))).items()}, str(entry))
    calls = _counting(model)
    with pytest.warns(SampotWarning, match=rf"embedding cache entry {entry} .*{why}.*; it is recomputed"):
        got = model.embed(image)
    assert calls[0] == 1 and got.input_size == want.input_size
    torch.testing.assert_close(got.features, want.features)
    model.embed(image)  # the entry written again is served without a word
    assert calls[0] == 1


def test_the_packaged_models_entries_have_the_shape_the_check_expects(tmp_path, recwarn):
    from sampot_lib.models import load_model

    model = load_model("sam_nano", embeddings=tmp_path / "emb")
    image = np.zeros((40, 24), np.uint8)
    first = model.embed(image)
    model._cache.clear()
    again = model.embed(image)
    assert model.store.hits == 1 and not [w for w in recwarn if "embedding cache" in str(w.message)]
    torch.testing.assert_close(again.features, first.features)
