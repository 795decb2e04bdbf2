"""The app for people who do not code: ``sampot app DATA_OR_IMAGE`` serves the prompt widget as a page of its own.

The page (Voilà, on the loopback address by default) shows an image picker for a data set (or the one image given),
the prompt widget of :mod:`sampot_lib.ui.widget` (click inside the structure, press evolve, watch the click's path) and
a link that downloads the mask shown as a PNG. Voilà starts one Jupyter kernel per browser tab and runs a
one-cell notebook in it that calls :func:`page`; nothing is loaded from outside the machine (Voilà's lab template,
less its CDN stylesheet: ``app_files/voila/templates/sampot``).

Several people can use one server: each page gets a kernel of its own (its own image, prompt and model copy), at
most ``max_sessions`` at a time (:mod:`sampot_lib.ui.sessions`; a page past it gets a "busy" page, HTTP 503), and a
page idle for ``idle_minutes`` loses its kernel, which frees its place. The page cannot run code of its choosing in
its kernel: Voilà's kernel manager passes on only the widgets' messages (comm_open, comm_msg, comm_close,
comm_info_request, kernel_info_request, shutdown_request) and drops execute_request. Served on an address other than
the loopback one, the page asks for a token, made afresh at each start and printed once in the URL to open.

The server (Voilà's command, the address, the token) is :mod:`sampot_lib.ui.server`. Input is checked twice:
:func:`check_app` before the server starts (the command line says what is wrong and starts
nothing), and :class:`SampotApp` inside the page (an image that cannot be read is named on the page; the server and
the other images stay usable).
"""

from __future__ import annotations

import base64
import html
import io
import json
import sys
import traceback
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import numpy as np
from PIL import Image

from sampot_lib.data.folder import FolderDataset
from sampot_lib.data.io import read_image
from sampot_lib.data.validate import structure_folders
from sampot_lib.defaults import (
    LR,
    SHARPNESS,
    STEPS,
    STRUCTURE,
)
from sampot_lib.errors import SampotError, SampotWarning
from sampot_lib.experiment.setup import apply_process_settings
from sampot_lib.files import sha256_file
from sampot_lib.method.regressor import load_regressor
from sampot_lib.method.regressor_origin import check_regressor, unmeasured_notes
from sampot_lib.method.shipped import (
    default_prompt_kind,
    find_shipped,
    shipped_by_name,
    shipped_regressors,
    verify_shipped,
)
from sampot_lib.models import load_model
from sampot_lib.models.registry import checkpoint_identity
from sampot_lib.ui.widget import PromptWidget, regressor_prompt_modes, starting_prompt_mode

# The widget's sliders span these; a setting outside would be clamped without a word.
STEPS_RANGE = (1, 100)
LR_RANGE = (0.1, 100.0)


@dataclass(frozen=True)
class AppSpec:
    """What the page serves, as :func:`check_app` checked it. source: a folder-format data set or one image file
    (absolute path); regressor: its file; structure: the mask folder shown as ground truth (None: none)."""

    source: str
    regressor: str
    model: str = "sam_nano"
    checkpoint: str | None = None
    mask_output: str | int | None = None
    device: str = "cpu"
    structure: str | None = None
    steps: int = STEPS
    lr: float = LR
    sharpness: float = SHARPNESS

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> AppSpec:
        return cls(**json.loads(Path(path).read_text()))


def _regressor_file(regressor: str | Path | None, model: str, structure: str | None) -> Path:
    """The regressor file the page uses: ``regressor`` (a file, or a shipped regressor's name), or None: the one
    shipped for ``model``, its prompt kind and ``structure`` (default: the left lung), its sha256 checked."""
    if regressor is not None and (Path(regressor).expanduser().exists() or str(regressor) not in shipped_regressors()):
        return Path(regressor).expanduser()
    if regressor is not None:
        record = shipped_by_name(str(regressor))
    else:
        record = find_shipped(model, default_prompt_kind(model), structure or STRUCTURE)
    print(f"regressor: {record.name} (shipped; its model card: {record.card_path})")
    return verify_shipped(record)


def check_app(
    source: str | Path,
    regressor: str | Path | None,
    *,
    model: str = "sam_nano",
    checkpoint: str | Path | None = None,
    mask_output: str | int | None = None,
    device: str = "cpu",
    structure: str | None = None,
    steps: int = STEPS,
    lr: float = LR,
) -> AppSpec:
    """Check everything the page will need, the slow parts included (the model loads once here: a wrong checkpoint
    or device fails now, and a registry model's weights are downloaded now, in the terminal). SampotError names the
    first problem. ``structure`` None: the one the regressor was trained on. ``regressor`` None: the one shipped for
    the model's prompt kind and ``structure`` (default: the left lung); a shipped regressor's name picks that one."""

    src = Path(source).expanduser()
    if not src.exists():
        raise SampotError(
            f"{src} does not exist; give a folder-format data set (images/, masks/<structure>/) or one image file."
        )
    if not STEPS_RANGE[0] <= steps <= STEPS_RANGE[1]:
        raise SampotError(f"--steps {steps} is outside {STEPS_RANGE[0]}..{STEPS_RANGE[1]}, the range the page offers.")
    if not LR_RANGE[0] <= lr <= LR_RANGE[1]:
        raise SampotError(f"--lr {lr} is outside {LR_RANGE[0]}..{LR_RANGE[1]} px, the range the page offers.")
    reg_path = _regressor_file(regressor, model, structure)
    _, meta = load_regressor(reg_path)
    trained_model, trained_on = meta.get("model"), meta.get("structure")
    if trained_model and trained_model != model:
        raise SampotError(
            f"regressor {reg_path} scores masks of model {trained_model!r}, not {model!r}: pass --model "
            f"{trained_model}, or train one for {model} (`sampot train-regressor DATA --model {model} --out DIR`)."
        )
    if structure and trained_on and structure != trained_on:
        raise SampotError(
            f"regressor {reg_path} was trained on {trained_on!r}, not {structure!r}: drop --structure, or train one "
            f"for {structure} (`sampot train-regressor DATA --structure {structure} --out DIR`)."
        )
    structure = structure or trained_on
    if src.is_dir():
        have = structure_folders(src)
        if structure is not None and have and structure not in have:
            raise SampotError(
                f"{src} has masks of {', '.join(have)}, but the regressor is for {structure!r}; "
                "give a data set with that structure, or a regressor trained on one of those."
            )
        # every problem of the folder at once; the masks of structures the page does not show are not read
        dataset = FolderDataset(src, structures=[] if structure is None else [structure])
    else:
        read_image(src)  # a file that is not a readable image fails here, by name
    paths = {i: dataset.image_path(i) for i in dataset.ids} if src.is_dir() else {src.stem: src}
    learned = ("train_images", "val_images", "train_masks", "val_masks", "calibration_images")
    hashes = {i: sha256_file(p) for i, p in paths.items()} if any(meta.get(k) for k in learned) else {}
    for note in unmeasured_notes(meta, hashes):  # the page shows their predicted Dice as if they were new
        warnings.warn(note, SampotWarning, stacklevel=2)
    loaded = load_model(model, checkpoint, device, mask_output=mask_output)
    # The rest of the regressor's record (weights, mask output, sharpness); the widget checks it for every image.
    check_regressor(meta, {"model": loaded.name, "checkpoint": checkpoint_identity(model, checkpoint),
                           "mask_output": getattr(loaded, "mask_output", None),
                           "sharpness": AppSpec.sharpness}, can_allow=False)  # fmt: skip
    return AppSpec(
        source=str(src.resolve()), regressor=str(reg_path.resolve()), model=model,
        checkpoint=None if checkpoint is None else str(Path(checkpoint).expanduser().resolve()),
        mask_output=mask_output, device=device, structure=structure, steps=int(steps), lr=float(lr),
    )  # fmt: skip


# -- the page, in the kernel ------------------------------------------------------------------------------------


class _Images:
    """The images the page offers: a data set's, or the one image given."""

    def __init__(self, spec: AppSpec) -> None:
        self.path = Path(spec.source)
        # check_app validated the folder; here a file that went bad since is named when it is opened.
        shown = [] if spec.structure is None else [spec.structure]
        self.dataset = FolderDataset(self.path, validate=False, structures=shown) if self.path.is_dir() else None
        self.structure = spec.structure
        self.ids: list[str] = self.dataset.ids if self.dataset is not None else [self.path.stem]

    def image(self, image_id: str) -> np.ndarray:
        """H x W uint8."""

        return self.dataset.image(image_id) if self.dataset is not None else read_image(self.path)

    def truth(self, image_id: str) -> np.ndarray | None:
        """H x W bool ground truth, or None (one image, or a data set without the structure)."""
        if self.dataset is None or self.structure not in self.dataset.structures:
            return None
        return self.dataset.mask(image_id, self.structure)


class SampotApp:
    """The page: a picker (data sets), a prompt-mode toggle (once the widget offers several), the prompt widget, a
    line that says what went wrong, and a link that downloads the mask shown as a PNG.

    ``open(image_id)`` does what the picker does. ``self.app`` is the widget to display; ``self.widget`` the
    :class:`~sampot_lib.ui.widget.PromptWidget` of the open image (None when it could not be opened).
    """

    def __init__(self, spec: AppSpec, model: Any = None, regressor: Any = None) -> None:

        self.spec = spec
        self.model = model if model is not None else load_model(
            spec.model, spec.checkpoint, spec.device, mask_output=spec.mask_output
        )  # fmt: skip
        self.regressor = regressor if regressor is not None else load_regressor(spec.regressor, device=spec.device)[0]
        self.images = _Images(spec)
        self.widget: PromptWidget | None = None
        self.image_id: str | None = None

        self.picker = widgets.Dropdown(options=self.images.ids, description="image")
        self.picker.add_class("sampot-picker")
        self.picker.layout.display = None if len(self.images.ids) > 1 else "none"
        # The prompt kinds the widget can place with the mouse (those the regressor scores); a toggle only once
        # there is a choice.
        provenance = getattr(self.regressor, "provenance", None)
        modes = regressor_prompt_modes(provenance)
        self.mode = widgets.ToggleButtons(
            options=list(modes), value=starting_prompt_mode(self.model, provenance), description="prompt"
        )
        self.mode.layout.display = None if len(modes) > 1 else "none"
        self.mode.observe(self._on_mode, names="value")
        self.message = widgets.HTML()
        self.message.add_class("sampot-message")
        self.holder = widgets.VBox()
        self.download = widgets.HTML()
        self.download.add_class("sampot-download")
        source = Path(spec.source).name + (f" ({len(self.images.ids)} images)" if self.images.dataset else "")
        truth = f", ground truth: {spec.structure}" if self.images.dataset and spec.structure else ""
        header = widgets.HTML(
            f"<b>sampot</b>: model {html.escape(spec.model)}, regressor {html.escape(Path(spec.regressor).name)}, "
            f"data {html.escape(source)}{html.escape(truth)}. Click inside the structure, then press evolve."
        )
        self.app = widgets.VBox([header, widgets.HBox([self.picker, self.mode]), self.message, self.holder,
                                 self.download])  # fmt: skip
        self.picker.observe(lambda change: self.open(change["new"]), names="value")
        self.open(self.images.ids[0])

    def open(self, image_id: str) -> None:
        """Show ``image_id`` in a fresh prompt widget, or say on the page why it cannot be shown."""

        self.image_id, self.widget, self.message.value = image_id, None, ""
        self.holder.children = ()
        try:
            image = self.images.image(image_id)
            try:
                truth = self.images.truth(image_id)
            except SampotError as exc:  # the image is still worth segmenting without its ground truth
                truth = None
                self._say(f"ground truth not shown: {exc}")
            widget = PromptWidget(self.model, self.regressor, image, truth, steps=self.spec.steps, lr=self.spec.lr,
                                  sharpness=self.spec.sharpness)  # fmt: skip
        except SampotError as exc:
            self._say(f"image {image_id} cannot be shown: {exc}")
        except Exception as exc:  # noqa: BLE001 - the page must stay usable; the traceback goes to the server's log
            traceback.print_exc(file=sys.stderr)
            self._say(f"image {image_id} cannot be shown: unexpected {type(exc).__name__}: {exc}")
        else:
            widget.prompt_mode = self.mode.value
            widget.on_change(lambda _: self._refresh_download())
            self.widget = widget
            self.holder.children = (widget.app,)
        self._refresh_download()

    def mask_png(self) -> bytes | None:
        """The mask shown now as a 0/255 PNG, or None before a click."""

        mask = self.widget.mask if self.widget is not None else None
        if mask is None:
            return None
        buf = io.BytesIO()
        Image.fromarray(mask.astype(np.uint8) * 255).save(buf, format="PNG")
        return buf.getvalue()

    def _refresh_download(self) -> None:
        # A data: link with a download name works offline and needs no file on the server.
        png = self.mask_png()
        if png is None:
            self.download.value = "" if self.widget is None else "Click on the image; its mask can then be downloaded."
            return
        name = html.escape(f"{self.image_id}_{self.spec.structure or 'structure'}_mask.png", quote=True)
        which = "evolved (best step)" if self.widget.result is not None else "clicked"
        self.download.value = (
            f'<a class="jupyter-button sampot-download-link" style="width:auto; padding:0 12px; '
            f'text-decoration:none" download="{name}" '
            f'href="data:image/png;base64,{base64.b64encode(png).decode()}">Download the mask (PNG)</a> '
            f"the {which} mask, {html.escape(name)}"
        )

    def _on_mode(self, change: dict[str, Any]) -> None:
        if self.widget is not None:
            self.widget.prompt_mode = change["new"]

    def _say(self, text: str) -> None:
        self.message.value = f"<span style='color:#b00020'>{html.escape(text)}</span>"


def page(spec_path: str | Path) -> None:
    """Display the app in the current kernel (what Voilà's one-cell notebook runs), or say on the page why it cannot
    start."""
    from IPython.display import HTML, display

    try:
        apply_process_settings()
        app = SampotApp(AppSpec.load(spec_path))
    except SampotError as exc:
        display(HTML(f"<p style='color:#b00020'>The app cannot start: {html.escape(str(exc))}</p>"))
        return
    except Exception as exc:  # noqa: BLE001 - say it on the page; the traceback goes to the server's log
        traceback.print_exc(file=sys.stderr)
        display(HTML(f"<p style='color:#b00020'>The app cannot start: {html.escape(type(exc).__name__)}: "
                     f"{html.escape(str(exc))}</p>"))  # fmt: skip
        return
    display(app.app)
