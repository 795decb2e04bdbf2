"""Converters from the usual published layouts of public chest X-ray sets into the folder format.

Supported (``sampot data prepare NAME --src DIR --out DIR``):

- ``montgomery``: ``CXR_png/<id>.png``, ``ManualMask/leftMask/<id>.png``, ``ManualMask/rightMask/<id>.png``.
- ``shenzhen``: ``CXR_png/<id>.png`` and combined lung masks ``mask/<id>_mask.png`` (or ``masks/<id>.png``);
  the combined mask is split into the two lungs by connected components.
- ``jsrt``: JSRT ``*.IMG`` (2048 x 2048, 12-bit big-endian, raw) with SCR masks ``left lung/<id>.gif`` and
  ``right lung/<id>.gif`` (anywhere under ``--src``); the image is box-downsampled to the masks' 1024 px.
- ``covid``: the ieee8023 covid-chestxray-dataset (``metadata.csv``, ``images/``) with the V7 Labs lung masks
  that torchxrayvision ships (``torchxrayvision/data/semantic_masks_v7labs_lungs.zip``, or ``--masks ZIP``);
  combined masks are split into left and right by connected components; ``patientid`` becomes the subject.

Sides: which lung is which is decided from the image, not from file names: in a PA view the patient's left lung
(``left_lung``) lies on the image's right. A combined mask whose two largest components do not sit on either side
of the image centre is skipped and reported.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from tqdm import tqdm

from sampot_lib.data.io import read_array, read_image, write_png
from sampot_lib.data.pixels import preprocess
from sampot_lib.errors import SampotError
from sampot_lib.files import ChecksumError, DownloadError, staged_folder, write_text
from sampot_lib.files import download as fetch


@dataclass(frozen=True)
class Download:
    """Where a set can be fetched. ``sha256`` is None when no published checksum is known."""

    url: str
    sha256: str | None
    note: str = ""


#: Download records. No checksum is published for these archives; the download prints the sha256 it got so
#: that a user can record it, and nothing is refused for want of one.
DOWNLOADS: dict[str, Download] = {
    "montgomery": Download(
        "https://openi.nlm.nih.gov/imgs/collections/NLM-MontgomeryCXRSet.zip", None, "NLM, public domain"
    ),
    "shenzhen": Download(
        "https://openi.nlm.nih.gov/imgs/collections/ChinaSet_AllFiles.zip",
        None,
        "NLM images only; the lung masks (Stirenko et al. 2018) are published separately and must be added",
    ),
    "covid": Download(
        "https://github.com/ieee8023/covid-chestxray-dataset/archive/refs/heads/master.zip",
        None,
        "a moving branch: its checksum changes with every commit",
    ),
}
#: Sets that need a registration or a click-through licence: no --download.
NO_DOWNLOAD = {"jsrt": "JSRT images need registration at jsrt.or.jp; the SCR masks come from the SCR site."}


@dataclass
class PrepareResult:
    out: Path
    written: int
    skipped: list[str]


def download(url: str, dest: str | Path, sha256: str | None = None) -> tuple[Path, str]:
    """Fetch ``url`` to ``dest`` and return (path, sha256). A known checksum must match.

    Through :func:`sampot_lib.files.download`: an interrupted download keeps ``<dest>.part`` and the next try resumes
    it; a finished file with the wrong checksum is removed.
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        return fetch(url, dest, sha256=sha256, progress=True)
    except ChecksumError as exc:
        raise SampotError(
            f"{url}: checksum mismatch (got sha256 {exc.got}, expected {exc.expected}); the file is corrupt or has "
            "changed upstream. Nothing was kept."
        ) from exc
    except DownloadError as exc:
        raise SampotError(
            f"{url}: download failed ({exc.cause}); {_kept(exc.part)}. Download it by hand, pass --src."
        ) from exc
    except OSError as exc:  # the disk, not the network
        kept = _kept(dest.with_name(dest.name + ".part"))
        raise SampotError(
            f"could not write {dest} ({exc.strerror}); free some space, or choose a --src folder you can write "
            f"({kept})."
        ) from exc


def _kept(part: Path) -> str:
    size = part.stat().st_size if part.is_file() else 0
    if not size:
        return "nothing kept"
    return f"the {size:,} bytes fetched so far are kept in {part} and the next try resumes from there"


def fetch_and_extract(name: str, into: str | Path, *, url: str | None = None) -> tuple[Path, str]:
    """Download set ``name`` (or ``url``) into ``into`` and unzip it there; returns (folder, sha256)."""
    if name in NO_DOWNLOAD:
        raise SampotError(f"{name} cannot be downloaded automatically: {NO_DOWNLOAD[name]} Pass --src instead.")
    if name not in DOWNLOADS:
        raise SampotError(f"unknown data set '{name}'; known: {', '.join(CONVERTERS)}.")
    rec = DOWNLOADS[name]
    into = Path(into)
    archive, digest = download(url or rec.url, into / f"{name}.zip", rec.sha256)
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(into / name)
    except zipfile.BadZipFile as exc:
        raise SampotError(f"{archive}: not a zip archive ({exc}).") from exc
    return into / name, digest


# --- Helpers shared by the converters.


def _resize(image: np.ndarray, masks: dict[str, np.ndarray], max_size: int | None):
    """Shrink so the longer side is at most ``max_size`` (area filter for the image, majority for masks)."""
    h, w = image.shape
    if not max_size or max(h, w) <= max_size:
        return image, masks
    f = max_size / max(h, w)
    size = (max(1, round(w * f)), max(1, round(h * f)))
    img = np.asarray(Image.fromarray(image).resize(size, Image.BOX))
    out = {}
    for k, m in masks.items():
        soft = np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize(size, Image.BOX))
        out[k] = soft >= 128
    return img, out


def split_lungs(combined: np.ndarray, *, name: str = "mask") -> dict[str, np.ndarray]:
    """Combined ``H x W`` lung mask -> {"left_lung", "right_lung"} from its two largest connected components.

    The component whose centroid is on the image's right is the patient's left lung (PA view).
    """
    lab, n = ndimage.label(combined)
    if n < 2:
        raise SampotError(f"{name}: combined lung mask has {n} connected region(s); two lungs are needed.")
    sizes = np.bincount(lab.ravel())[1:]
    a, b = np.argsort(sizes)[::-1][:2] + 1
    if sizes[b - 1] < 0.1 * sizes[a - 1]:
        raise SampotError(f"{name}: second lung region is under a tenth of the first; the lungs may be merged.")
    cols = np.arange(combined.shape[1])
    ca = (cols * (lab == a).sum(0)).sum() / sizes[a - 1]
    cb = (cols * (lab == b).sum(0)).sum() / sizes[b - 1]
    mid = combined.shape[1] / 2
    if not ((ca - mid) * (cb - mid) < 0):
        raise SampotError(f"{name}: both lung regions lie on the same side of the image.")
    right_img, left_img = (a, b) if ca > cb else (b, a)
    return {"left_lung": lab == right_img, "right_lung": lab == left_img}


def _sides_from_pair(m1: np.ndarray, m2: np.ndarray) -> dict[str, np.ndarray]:
    """Two single-lung masks -> named by side (image-right = patient's left)."""
    cols = np.arange(m1.shape[1])

    def cx(m: np.ndarray) -> float:
        return float((cols * m.sum(0)).sum() / max(1, m.sum()))

    return {"left_lung": m1, "right_lung": m2} if cx(m1) > cx(m2) else {"left_lung": m2, "right_lung": m1}


def _binary(arr: np.ndarray) -> np.ndarray:
    """Mask file pixels (0/1, 0/255, JPEG-noisy, RGB) -> bool at half the maximum."""
    a = np.asarray(arr)
    if a.ndim == 3:
        a = a[..., :3].max(-1)
    return a > (a.max() / 2 if a.max() > 0 else 0)


class _Writer:
    """Writes a converted set into a folder staged beside ``out``: used as ``with _Writer(out, size) as w``, the set
    reaches ``out`` when the block ends after :meth:`finish`, and a failure or interrupt in it leaves ``out`` as it
    was."""

    def __init__(self, out: Path, max_size: int | None):
        self.out = Path(out)
        if (self.out / "images").is_dir() and any((self.out / "images").iterdir()):
            raise SampotError(f"{self.out}/images is not empty; choose a new --out folder.")
        self.max_size = max_size
        self.rows: list[tuple[str, str, str]] = []
        self.skipped: list[str] = []
        self._staging = staged_folder(self.out)

    def __enter__(self) -> _Writer:
        self.stage: Path = self._staging.__enter__()  # where add() and finish() write
        return self

    def __exit__(self, *exc_info) -> None:
        self._staging.__exit__(*exc_info)

    def add(self, image_id: str, image: np.ndarray, masks: dict[str, np.ndarray], subject: str, source: str):
        if any(m.shape != image.shape for m in masks.values()):
            shapes = {k: m.shape for k, m in masks.items()}
            self.skipped.append(f"{image_id}: mask size {shapes} differs from image {image.shape}")
            return
        if any(not m.any() for m in masks.values()):
            self.skipped.append(f"{image_id}: an empty lung mask")
            return
        image, masks = _resize(image, masks, self.max_size)
        write_png(self.stage / "images" / f"{image_id}.png", image)
        for k, m in masks.items():
            write_png(self.stage / "masks" / k / f"{image_id}.png", m)
        self.rows.append((image_id, subject, source))

    def finish(self) -> PrepareResult:
        if not self.rows:
            raise SampotError(
                f"no image could be converted into {self.out} ({len(self.skipped)} skipped"
                + (f": {self.skipped[0]} ..." if self.skipped else "")
                + "). Check --src points at the unpacked set."
            )
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["id", "subject", "source"])
        w.writerows(self.rows)
        write_text(self.stage / "manifest.csv", buf.getvalue())
        return PrepareResult(self.out, len(self.rows), self.skipped)


def _find_dir(src: Path, names: Iterable[str]) -> Path | None:
    """First folder under ``src`` (itself included) whose name is one of ``names`` (case-insensitive)."""
    wanted = {n.lower() for n in names}
    if src.name.lower() in wanted:
        return src
    for p in sorted(src.rglob("*")):
        if p.is_dir() and p.name.lower() in wanted:
            return p
    return None


def _progress(items: list, desc: str, progress: bool):
    if not progress:
        return items

    return tqdm(items, desc=desc, unit="image")


# --- Converters.


def prepare_montgomery(src: Path, out: Path, *, max_size: int | None = 1024, progress: bool = False) -> PrepareResult:
    """Montgomery County: CXR_png + ManualMask/leftMask + ManualMask/rightMask."""
    img_dir = _find_dir(src, ["CXR_png"])
    left_dir, right_dir = _find_dir(src, ["leftMask"]), _find_dir(src, ["rightMask"])
    if img_dir is None or left_dir is None or right_dir is None:
        raise SampotError(f"{src}: expected CXR_png/, ManualMask/leftMask/ and ManualMask/rightMask/ (Montgomery).")
    with _Writer(out, max_size) as w:
        for path in _progress(sorted(img_dir.glob("*.png")), "montgomery", progress):
            lp, rp = left_dir / path.name, right_dir / path.name
            if not (lp.is_file() and rp.is_file()):
                w.skipped.append(f"{path.name}: no mask in leftMask/ or rightMask/")
                continue
            image = read_image(path)
            masks = _sides_from_pair(_binary(read_array(lp)), _binary(read_array(rp)))
            w.add(path.stem, image, masks, path.stem, "montgomery")
        return w.finish()


def prepare_shenzhen(src: Path, out: Path, *, max_size: int | None = 1024, progress: bool = False) -> PrepareResult:
    """Shenzhen: CXR_png + combined masks (``mask/<id>_mask.png`` as published with the lung masks)."""
    img_dir = _find_dir(src, ["CXR_png"])
    mask_dir = _find_dir(src, ["mask", "masks"])
    if img_dir is None or mask_dir is None:
        raise SampotError(f"{src}: expected CXR_png/ and mask/ (Shenzhen images with the published lung masks).")
    with _Writer(out, max_size) as w:
        for path in _progress(sorted(img_dir.glob("*.png")), "shenzhen", progress):
            mp = next((p for p in (mask_dir / f"{path.stem}_mask.png", mask_dir / path.name) if p.is_file()), None)
            if mp is None:
                w.skipped.append(f"{path.name}: no lung mask (only part of Shenzhen is annotated)")
                continue
            try:
                masks = split_lungs(_binary(read_array(mp)), name=mp.name)
            except SampotError as exc:
                w.skipped.append(str(exc))
                continue
            w.add(path.stem, read_image(path), masks, path.stem, "shenzhen")
        return w.finish()


JSRT_SIZE = 2048


def read_jsrt_img(path: str | Path) -> np.ndarray:
    """A raw JSRT ``.IMG`` (2048 x 2048, 12-bit, big-endian, high = dark) -> ``2048 x 2048`` uint8, bone bright."""
    raw = np.fromfile(path, dtype=">u2")
    if raw.size != JSRT_SIZE * JSRT_SIZE:
        raise SampotError(f"{path}: {raw.size * 2} bytes; a JSRT .IMG has {JSRT_SIZE * JSRT_SIZE * 2}.")
    # JSRT stores optical density (high = dark film): invert so bone is bright, as in every other input.
    return preprocess(4095.0 - raw.reshape(JSRT_SIZE, JSRT_SIZE).astype(np.float32), low_pct=0.5, high_pct=99.5)


def prepare_jsrt(src: Path, out: Path, *, max_size: int | None = 1024, progress: bool = False) -> PrepareResult:
    """JSRT .IMG files + SCR ``left lung`` / ``right lung`` GIF masks; images are shrunk to the masks' size."""
    left_dir = _find_dir(src, ["left lung", "left_lung"])
    right_dir = _find_dir(src, ["right lung", "right_lung"])
    imgs = sorted(p for p in src.rglob("*") if p.suffix.upper() == ".IMG")
    if not imgs or left_dir is None or right_dir is None:
        raise SampotError(f"{src}: expected JSRT *.IMG files and SCR 'left lung/' and 'right lung/' mask folders.")
    with _Writer(out, max_size) as w:
        for path in _progress(imgs, "jsrt", progress):
            found = []
            for d in (left_dir, right_dir):
                found.append(next((p for p in d.glob(f"{path.stem}.*") if p.suffix.lower() in (".gif", ".png")), None))
            if None in found:
                w.skipped.append(f"{path.name}: no SCR mask")
                continue
            left, right = (_binary(read_array(p)) for p in found)
            image = read_jsrt_img(path)
            if image.shape != left.shape:
                fh, fw = image.shape[0] // left.shape[0], image.shape[1] // left.shape[1]
                if fh < 1 or image.shape != (left.shape[0] * fh, left.shape[1] * fw):
                    w.skipped.append(f"{path.name}: image {image.shape} vs mask {left.shape}")
                    continue
                image = image.reshape(left.shape[0], fh, left.shape[1], fw).mean((1, 3)).round().astype(np.uint8)
            # SCR names are the patient's sides already; keep them (no centroid guess needed).
            w.add(path.stem, image, {"left_lung": left, "right_lung": right}, path.stem, "jsrt")
        return w.finish()


def v7_masks_zip() -> Path:
    """The V7 Labs lung masks zip that the torchxrayvision wheel ships (the package is not imported)."""
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        raise SampotError(
            "the covid converter needs the V7 lung masks from torchxrayvision: `pip install torchxrayvision`, "
            "or pass --masks PATH/semantic_masks_v7labs_lungs.zip."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "semantic_masks_v7labs_lungs.zip"
    if not path.is_file():
        raise SampotError(f"{path}: not found in this torchxrayvision; pass --masks ZIP.")
    return path


def prepare_covid(
    src: Path,
    out: Path,
    *,
    max_size: int | None = 1024,
    progress: bool = False,
    masks: str | Path | None = None,
    views: tuple[str, ...] = ("PA", "AP"),
) -> PrepareResult:
    """ieee8023 covid-chestxray-dataset + V7 lung masks (combined; split by connected components)."""
    meta = next(iter(sorted(src.rglob("metadata.csv"))), None)
    if meta is None:
        raise SampotError(f"{src}: no metadata.csv (expected the covid-chestxray-dataset repository).")
    img_dir = meta.parent / "images"
    zpath = Path(masks) if masks else v7_masks_zip()
    try:
        zf = zipfile.ZipFile(zpath)
    except (OSError, zipfile.BadZipFile) as exc:
        raise SampotError(f"{zpath}: not a readable zip ({exc}).") from exc
    names = {Path(n).name: n for n in zf.namelist() if not n.endswith("/")}
    with open(meta, newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if (r.get("view") or "").strip() in views]
    with _Writer(out, max_size) as w:
        used: set[str] = set()
        for row in _progress(rows, "covid", progress):
            fname = (row.get("filename") or "").strip()
            if fname not in names:
                continue  # only part of the set has masks
            path = img_dir / fname
            if not path.is_file():
                w.skipped.append(f"{fname}: listed in metadata.csv but not in images/")
                continue
            try:
                combined = _binary(np.asarray(Image.open(io.BytesIO(zf.read(names[fname])))))
                lungs = split_lungs(combined, name=fname)
                image = read_image(path)
            except (SampotError, OSError) as exc:
                w.skipped.append(str(exc))
                continue
            image_id = Path(fname).stem.replace(" ", "_")
            if image_id in used:
                w.skipped.append(f"{fname}: id '{image_id}' already used")
                continue
            used.add(image_id)
            w.add(image_id, image, lungs, f"patient_{(row.get('patientid') or image_id).strip()}", "covid")
        return w.finish()


CONVERTERS: dict[str, Callable[..., PrepareResult]] = {
    "montgomery": prepare_montgomery,
    "shenzhen": prepare_shenzhen,
    "jsrt": prepare_jsrt,
    "covid": prepare_covid,
}


def prepare(
    name: str, src: str | Path, out: str | Path, *, max_size: int | None = 1024, progress: bool = False, **kw
) -> PrepareResult:
    """Convert public set ``name`` found under ``src`` into the folder format at ``out``."""
    if name not in CONVERTERS:
        raise SampotError(f"unknown data set '{name}'; known: {', '.join(CONVERTERS)}.")
    src = Path(src)
    if not src.is_dir():
        raise SampotError(f"{src}: no such folder; unpack the {name} set there, or use --download.")
    return CONVERTERS[name](src, Path(out), max_size=max_size, progress=progress, **kw)
