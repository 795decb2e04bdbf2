#!/usr/bin/env python
"""Train SAM-Nano (segment-anything's architecture, small) on non-medical images only.

Data: procedural scenes and scikit-image/matplotlib natural photographs (scripts/nano_data.py), never a chest
X-ray or a lung mask. Recipe after SAM (Kirillov et al. 2023, section 3 and appendix A): per image several prompts,
each a single click, a few clicks (positive and negative) or a box; a click's loss is the minimum over the three
multimask outputs (the ambiguity-aware loss), other prompts train the single-output token; the IoU head regresses each
output's true IoU with MSE. Four departures, each needed because the from-scratch decoder otherwise answered every
click with the same mask on a CPU budget (see weights/sam_nano.md): BCE + dice instead of 20 x focal + dice
(``--mask-loss``), ``routing_init``, a point-consistency term (``_point_loss``) and a training-only ``AuxHead``.

Every step draws its data from ``np.random.default_rng([seed, step])``, so a resumed run sees the same batches as an
uninterrupted one. The checkpoint (model, aux head, optimizer, step) is written atomically every ``--save-every``
steps; the log of losses goes to OUT/log.csv.

    python scripts/train_sam_nano.py --out /tmp/nano --steps 800 --threads 1       # the committed weights (41 min)
    python scripts/train_sam_nano.py --out /tmp/nano --steps 800 --resume          # go on after an interruption
    python scripts/train_sam_nano.py --out /tmp/nano --export sampot_lib/models/weights/sam_nano.pt
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from skimage.segmentation import find_boundaries
from torch import nn
from torchvision.ops import sigmoid_focal_loss
from tqdm.auto import tqdm

from sampot_lib.models.nano import build_sam_nano

# The training-data generator lives beside this script (it is not part of the runtime package).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from nano_data import Scene, augment_natural, natural_pool, natural_scene, procedural_scene  # noqa: E402

MAX_POINTS = 4  # multi-point prompts are padded to this many with label -1 ("not a point")
N_SUPERVISION = 16  # pixels per prompt whose label every trained output must get right (see _supervision_points)


@dataclass
class Prompts:
    """One batch of prompts of one kind. points: P x N x 2 (x, y) in the 256 px frame; labels: P x N; boxes: P x 4;
    image: P (index of the prompt's image in the batch); target: P x S x S float (0/1); sup_points: P x M x 2 and
    sup_labels: P x M (1 inside, 0 outside), pixels that all trained outputs must label alike."""

    image: torch.Tensor
    target: torch.Tensor
    sup_points: torch.Tensor
    sup_labels: torch.Tensor
    points: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    boxes: torch.Tensor | None = None


def _supervision_points(
    rng: np.random.Generator, inner: np.ndarray, outer: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """N_SUPERVISION (x, y) pixels, half inside ``inner`` (label 1), half outside ``outer`` (label 0; -1 = none)."""
    half = N_SUPERVISION // 2
    pts = np.zeros((N_SUPERVISION, 2), np.float32)
    labels = np.full(N_SUPERVISION, -1, np.int64)
    for k, (region, label) in enumerate(((inner, 1), (~outer, 0))):
        ys, xs = np.nonzero(region)
        if len(xs):
            js = rng.integers(len(xs), size=half)
            pts[k * half : (k + 1) * half] = np.stack([xs[js], ys[js]], axis=1)
            labels[k * half : (k + 1) * half] = label
    return pts, labels


def _pick_region(rng: np.random.Generator, scene: Scene, min_area: int) -> np.ndarray | None:
    """A random region mask (S x S bool) from a random hierarchy level, larger regions a little more likely."""
    for _ in range(6):
        level = scene.levels[int(rng.integers(len(scene.levels)))]
        areas = np.bincount(level.ravel())
        ok = np.flatnonzero(areas >= min_area)
        if len(ok) == 0:
            continue
        # area ** 0.25: large regions a little more likely than uniform (lungs are large), yet small ones dominate
        # enough that a whole-image mask is a poor answer (with sqrt(area) the decoder collapsed to constant masks)
        w = areas[ok].astype(np.float64) ** 0.25
        label = ok[rng.choice(len(ok), p=w / w.sum())]
        return level == label
    return None


def _sample_prompts(
    rng: np.random.Generator, scenes: list[Scene], per_image: int, p_multi: float, p_box: float
) -> dict[str, Prompts]:
    """Draw ``per_image`` prompts for each scene: {"click": ..., "multi": ..., "box": ...} (kinds may be absent)."""
    size = scenes[0].image.shape[0]
    acc: dict[str, dict[str, list]] = {
        k: {"image": [], "target": [], "a": [], "b": [], "sp": [], "sl": []} for k in ("click", "multi", "box")
    }
    for i, scene in enumerate(scenes):
        for _ in range(per_image):
            mask = _pick_region(rng, scene, min_area=max(16, size * size // 500))
            if mask is None:
                continue
            ys, xs = np.nonzero(mask)
            u = rng.random()
            kind = "box" if u < p_box else "multi" if u < p_box + p_multi else "click"
            if kind == "click":
                j = int(rng.integers(len(xs)))
                a, b = np.array([[xs[j], ys[j]]], np.float32), np.array([1], np.int64)
                # all three outputs hold the click's finest region and none leaves its coarsest one
                inner = scene.levels[0] == scene.levels[0][ys[j], xs[j]]
                outer = scene.levels[-1] == scene.levels[-1][ys[j], xs[j]]
                sp, sl = _supervision_points(rng, inner, outer)
            elif kind == "multi":
                n_pos = int(rng.integers(2, 4))
                js = rng.integers(len(xs), size=n_pos)
                pts, labs = [[xs[j], ys[j]] for j in js], [1] * n_pos
                out_y, out_x = np.nonzero(~mask)
                if len(out_x) and rng.random() < 0.6:
                    j = int(rng.integers(len(out_x)))
                    pts.append([out_x[j], out_y[j]])
                    labs.append(0)
                pad = MAX_POINTS - len(pts)
                a = np.array(pts + [[0, 0]] * pad, np.float32)
                b = np.array(labs + [-1] * pad, np.int64)
            else:  # a tight box with noise of 10% of its side, at most 20 px (SAM, appendix A)
                box = np.array([xs.min(), ys.min(), xs.max(), ys.max()], np.float64)
                side = np.repeat([box[2] - box[0], box[3] - box[1]], 1)
                noise = np.clip(rng.normal(0, 0.1, 4) * np.tile(side, 2), -20, 20)
                a, b = np.clip(box + noise, 0, size - 1).astype(np.float32), None
            if kind != "click":  # the single output answers for the target itself
                sp, sl = _supervision_points(rng, mask, mask)
            acc[kind]["image"].append(i)
            acc[kind]["target"].append(mask)
            acc[kind]["a"].append(a)
            acc[kind]["b"].append(b)
            acc[kind]["sp"].append(sp)
            acc[kind]["sl"].append(sl)
    out: dict[str, Prompts] = {}
    for kind, d in acc.items():
        if not d["image"]:
            continue
        p = Prompts(
            image=torch.tensor(d["image"]),
            target=torch.from_numpy(np.stack(d["target"]).astype(np.float32)),
            sup_points=torch.from_numpy(np.stack(d["sp"])),
            sup_labels=torch.from_numpy(np.stack(d["sl"])),
        )
        if kind == "box":
            p.boxes = torch.from_numpy(np.stack(d["a"]))
        else:
            p.points = torch.from_numpy(np.stack(d["a"]))
            p.labels = torch.from_numpy(np.stack(d["b"]))
        out[kind] = p
    return out


def _decode(sam: Sam, features: torch.Tensor, prompts: Prompts) -> tuple[torch.Tensor, torch.Tensor]:
    """All four mask outputs for P prompts over B images: low-res logits P x 4 x h x w and IoU predictions P x 4.

    The same computation as ``MaskDecoder.predict_masks``, except that each prompt takes its own image's features
    (``predict_masks`` repeats one image's features for every prompt), so a batch of images is decoded in one call.
    """
    dec = sam.mask_decoder
    points = None if prompts.points is None else (prompts.points, prompts.labels)
    sparse, dense = sam.prompt_encoder(points=points, boxes=prompts.boxes, masks=None)
    tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
    tokens = torch.cat([tokens.unsqueeze(0).expand(sparse.shape[0], -1, -1), sparse], dim=1)
    src = features[prompts.image] + dense
    pos_src = sam.prompt_encoder.get_dense_pe().expand(src.shape[0], -1, -1, -1)
    b, c, h, w = src.shape
    hs, src = dec.transformer(src, pos_src, tokens)
    iou_token_out, mask_tokens_out = hs[:, 0, :], hs[:, 1 : 1 + dec.num_mask_tokens, :]
    upscaled = dec.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
    hyper = torch.stack([mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(dec.output_hypernetworks_mlps)], dim=1)
    b, c, h, w = upscaled.shape
    masks = (hyper @ upscaled.view(b, c, h * w)).view(b, -1, h, w)
    return masks, dec.iou_prediction_head(iou_token_out)


def _mask_losses(logits: torch.Tensor, target: torch.Tensor, kind: str = "bce") -> tuple[torch.Tensor, torch.Tensor]:
    """logits: P x K x S x S, target: P x S x S. Returns the mask loss P x K, pixel term + dice, and the true IoU
    P x K (no grad). kind "focal": SAM's 20 x focal + dice; "bce": binary cross-entropy + dice, the default here,
    because from scratch the decoder learned to follow a click several times faster with it (a probe on a toy task
    of disks around clicks: BCE learned in about 100 steps, focal had barely started)."""
    t = target[:, None].expand_as(logits)
    if kind == "focal":
        pixel = 20 * sigmoid_focal_loss(logits, t, alpha=0.25, gamma=2.0, reduction="none").mean(dim=(2, 3))
    else:
        pixel = F.binary_cross_entropy_with_logits(logits, t, reduction="none").mean(dim=(2, 3))
    prob = logits.sigmoid()
    dice = 1 - (2 * (prob * t).sum(dim=(2, 3)) + 1) / (prob.sum(dim=(2, 3)) + t.sum(dim=(2, 3)) + 1)
    with torch.no_grad():
        hard = logits > 0
        inter = (hard & (t > 0.5)).sum(dim=(2, 3)).float()
        union = (hard | (t > 0.5)).sum(dim=(2, 3)).float()
        iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
    return pixel + dice, iou


def _point_loss(logits: torch.Tensor, points: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of every trained output's logit at a few labelled pixels. logits: P x K x S x S;
    points: P x N x 2 (x, y) in that S px frame; labels: P x N (1 inside, 0 outside, -1 = none). Returns P.

    Not in SAM's recipe. Trained from scratch on a CPU budget, the decoder collapsed to prompt-independent masks
    (outputs empty or the whole image): the min-over-outputs loss feeds only the output that is already best, so
    each output stayed in its niche. For a click, every output should hold the click's finest region and stay
    inside its coarsest one, whatever level the sampled target has; that gives all three outputs a spatial signal.
    """
    size = logits.shape[-1]
    grid = ((points + 0.5) / size * 2 - 1)[:, :, None, :]  # P x N x 1 x 2 in [-1, 1], pixel centres
    at = F.grid_sample(logits, grid, mode="bilinear", align_corners=False)[..., 0]  # P x K x N
    valid = (labels >= 0)[:, None, :].expand_as(at).float()
    target = (labels == 1)[:, None, :].expand_as(at).float()
    bce = F.binary_cross_entropy_with_logits(at, target, reduction="none")
    return (bce * valid).sum(dim=(1, 2)) / valid.sum(dim=(1, 2)).clamp(min=1)


def make_batch(
    step_rng: np.random.Generator, pool: list[Scene], batch: int, natural_frac: float, size: int
) -> list[Scene]:
    """``batch`` scenes, each natural with probability ``natural_frac`` (if a pool exists), else procedural."""
    scenes = []
    for _ in range(batch):
        if pool and step_rng.random() < natural_frac:
            scenes.append(augment_natural(step_rng, natural_scene(step_rng, pool, size)))
        else:
            scenes.append(procedural_scene(step_rng, size))
    return scenes


class AuxHead(nn.Module):
    """Training-only 1x1 conv on the encoder's C x 16 x 16 features: per token, the 8 x 8 gray pixels of its patch
    (at half resolution) and a 4 x 4 map of region borders inside it. Not part of SAM's recipe nor of the exported
    model: trained from scratch, the encoder's features collapsed towards a constant within 50 steps (spatial std
    0.68 -> 0.14) and the decoder answered every click with the same mask; asking each token to describe its own
    patch keeps the features spatial."""

    def __init__(self, channels: int):
        super().__init__()
        self.proj = nn.Conv2d(channels, 64 + 16, kernel_size=1)

    def loss(self, features: torch.Tensor, scenes: list[Scene]) -> torch.Tensor:
        """features: B x C x g x g for S x S scenes with S = 16 g."""
        out = self.proj(features)
        gray = torch.from_numpy(np.stack([s.image.mean(axis=-1) for s in scenes]).astype(np.float32))[:, None]
        gray = F.avg_pool2d(gray, 2)
        gray = (gray - gray.mean(dim=(2, 3), keepdim=True)) / (gray.std(dim=(2, 3), keepdim=True) + 1e-3)
        edges = np.stack([find_boundaries(s.levels[1], mode="thick") for s in scenes]).astype(np.float32)
        edges = F.max_pool2d(torch.from_numpy(edges)[:, None], 4)
        recon = F.mse_loss(out[:, :64], F.pixel_unshuffle(gray, 8))
        border = F.binary_cross_entropy_with_logits(out[:, 64:], F.pixel_unshuffle(edges, 4))
        return recon + border


def training_loss(
    sam: Sam, scenes: list[Scene], rng: np.random.Generator, per_image: int, iou_weight: float,
    p_multi: float = 0.2, p_box: float = 0.1, point_weight: float = 1.0,
    aux: AuxHead | None = None, aux_weight: float = 1.0, mask_loss_kind: str = "bce",
) -> tuple[torch.Tensor, dict[str, float]]:  # fmt: skip
    """SAM's loss on one batch of scenes, plus ``point_weight`` x a point-consistency term (see _point_loss) and,
    if ``aux`` is given, ``aux_weight`` x its patch-description loss. Returns the scalar loss and logged parts."""
    images = torch.from_numpy(np.stack([s.image for s in scenes])).permute(0, 3, 1, 2).float()
    features = sam.image_encoder(sam.preprocess(images))
    aux_loss = aux.loss(features, scenes) if aux is not None else features.new_zeros(())
    # the loss is taken at half the input size (128 px, twice the decoder's 64 px): 4x cheaper than full size on
    # CPU, and still finer than the masks the decoder can draw
    size = sam.image_encoder.img_size // 2
    prompts = _sample_prompts(rng, scenes, per_image, p_multi, p_box)
    mask_terms, iou_terms, point_terms, logs = [], [], [], {}
    for kind, p in prompts.items():
        low, iou_pred = _decode(sam, features, p)
        # outputs 1..3 answer a single ambiguous click; output 0 answers several prompts (SAM's convention)
        cols = slice(1, 4) if kind == "click" else slice(0, 1)
        logits = F.interpolate(low[:, cols], (size, size), mode="bilinear", align_corners=False)
        target = (F.avg_pool2d(p.target[:, None], 2)[:, 0] >= 0.5).float()
        per_output, true_iou = _mask_losses(logits, target, mask_loss_kind)
        mask_terms.append(per_output.min(dim=1).values)
        if point_weight > 0:
            point_terms.append(_point_loss(logits, p.sup_points * (size / sam.image_encoder.img_size), p.sup_labels))
        iou_terms.append(((iou_pred[:, cols] - true_iou) ** 2).mean(dim=1))
        logs[f"iou_{kind}"] = float(true_iou.max(dim=1).values.mean())
    mask_loss = torch.cat(mask_terms).mean()
    iou_loss = torch.cat(iou_terms).mean()
    point_loss = torch.cat(point_terms).mean() if point_terms else mask_loss.new_zeros(())
    logs.update(mask=float(mask_loss.detach()), iou_mse=float(iou_loss.detach()), point=float(point_loss.detach()),
                aux=float(aux_loss.detach()))  # fmt: skip
    return mask_loss + iou_weight * iou_loss + point_weight * point_loss + aux_weight * aux_loss, logs


def routing_init(sam: Sam, gain: float = 3.0) -> None:
    """Tie each decoder cross-attention's key projection to its query projection (scaled by ``gain``), so that at
    the start an image position attends to a prompt token in proportion to the similarity of their positional
    encodings (random Fourier features: a bump around the click). Not in SAM; SAM's decoder learns this routing
    from a pretrained encoder. From scratch on a CPU budget the decoder answered every click with the same mask for
    hundreds of steps; this initialisation gives the click's location a path to the mask from the first step."""
    transformer = sam.mask_decoder.transformer
    attns = [transformer.final_attn_token_to_image]
    for layer in transformer.layers:
        attns += [layer.cross_attn_token_to_image, layer.cross_attn_image_to_token]
    with torch.no_grad():
        for attn in attns:
            attn.q_proj.weight.mul_(gain)
            attn.k_proj.weight.copy_(attn.q_proj.weight)


def _lr_factor(step: int, steps: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 5% of the peak."""
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


def _atomic_save(obj: object, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def export_weights(checkpoint: Path, dest: Path) -> str:
    """Write the checkpoint's model weights as an fp16 state dict to ``dest`` (atomically); return its sha256."""
    blob = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state = {k: v.half() if v.is_floating_point() else v for k, v in blob["model"].items()}
    dest.parent.mkdir(parents=True, exist_ok=True)
    _atomic_save(state, dest)
    return hashlib.sha256(dest.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="folder for ckpt.pt, log.csv, args.json")
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--batch", type=int, default=6, help="images per step")
    ap.add_argument("--prompts-per-image", type=int, default=8)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--iou-weight", type=float, default=2.0, help="weight of the IoU-head MSE")
    ap.add_argument("--point-weight", type=float, default=1.0, help="weight of the click-consistency BCE")
    ap.add_argument("--aux-weight", type=float, default=1.0, help="0 turns the encoder's auxiliary head off")
    ap.add_argument("--routing-init", type=float, default=3.0, help="gain of routing_init; 0 = off")
    ap.add_argument("--mask-loss", choices=["bce", "focal"], default="bce", help="pixel term of the mask loss")
    ap.add_argument("--natural-frac", type=float, default=0.5, help="share of natural-image crops in a batch")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save-every", type=int, default=25)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--resume", action="store_true", help="continue from OUT/ckpt.pt")
    ap.add_argument("--no-natural", action="store_true", help="procedural scenes only (fast start, for tests)")
    ap.add_argument("--export", type=Path, help="only write OUT/ckpt.pt's weights (fp16) to this path and exit")
    args = ap.parse_args(argv)

    ckpt_path = args.out / "ckpt.pt"
    if args.export is not None:
        digest = export_weights(ckpt_path, args.export)
        print(f"wrote {args.export} ({args.export.stat().st_size:,} bytes) sha256 {digest}")
        return 0

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    sam = build_sam_nano().train()
    if args.routing_init > 0:  # overwritten by the checkpoint on --resume
        routing_init(sam, args.routing_init)
    aux = AuxHead(sam.image_encoder.neck[-1].weight.shape[0]) if args.aux_weight > 0 else None
    params = list(sam.parameters()) + (list(aux.parameters()) if aux is not None else [])
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    start = 0
    if args.resume and ckpt_path.is_file():
        blob = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        sam.load_state_dict(blob["model"])
        if aux is not None:
            aux.load_state_dict(blob["aux"])
        opt.load_state_dict(blob["optimizer"])
        start = int(blob["step"])
        print(f"resumed from {ckpt_path} at step {start}", file=sys.stderr)
    elif ckpt_path.exists():
        print(f"{ckpt_path} exists: pass --resume to continue it, or choose another --out", file=sys.stderr)
        return 2
    tmp_args = args.out / "args.json.tmp"
    tmp_args.write_text(json.dumps({k: str(v) for k, v in vars(args).items()}, indent=1))
    os.replace(tmp_args, args.out / "args.json")
    pool = [] if args.no_natural else natural_pool(args.out / "natural_pool.npz")
    size = sam.image_encoder.img_size

    log_path = args.out / "log.csv"
    fields = ["step", "loss", "mask", "iou_mse", "point", "aux", "iou_click", "iou_multi", "iou_box", "lr"]
    fields.append("sec_per_step")
    new_log = not log_path.exists() or start == 0
    log_file = open(log_path, "w" if new_log else "a", newline="")
    writer = csv.DictWriter(log_file, fieldnames=fields, extrasaction="ignore")
    if new_log:
        writer.writeheader()

    def save(step: int) -> None:
        blob = {"model": sam.state_dict(), "optimizer": opt.state_dict(), "step": step}
        if aux is not None:
            blob["aux"] = aux.state_dict()
        _atomic_save(blob, ckpt_path)

    bar = tqdm(range(start, args.steps), initial=start, total=args.steps, desc="sam_nano", mininterval=5)
    running: dict[str, float] = {}
    t0 = time.time()
    for step in bar:
        rng = np.random.default_rng([args.seed, step])
        for g in opt.param_groups:
            g["lr"] = args.lr * _lr_factor(step, args.steps, args.warmup)
        scenes = make_batch(rng, pool, args.batch, args.natural_frac, size)
        loss, logs = training_loss(
            sam,
            scenes,
            rng,
            args.prompts_per_image,
            args.iou_weight,
            point_weight=args.point_weight,
            aux=aux,
            aux_weight=args.aux_weight,
            mask_loss_kind=args.mask_loss,
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(sam.parameters(), 1.0)
        opt.step()
        logs["loss"] = float(loss.detach())
        for k, v in logs.items():  # exponential moving averages for the bar and the log
            running[k] = v if k not in running else 0.95 * running[k] + 0.05 * v
        if (step + 1) % args.log_every == 0:
            sec = (time.time() - t0) / args.log_every
            t0 = time.time()
            writer.writerow({**{k: f"{v:.4f}" for k, v in logs.items()}, "step": step + 1,
                             "lr": f"{opt.param_groups[0]['lr']:.2e}", "sec_per_step": f"{sec:.3f}"})  # fmt: skip
            log_file.flush()
            bar.set_postfix(loss=f"{running['loss']:.3f}", iou=f"{running.get('iou_click', 0):.2f}")
        if (step + 1) % args.save_every == 0 or step + 1 == args.steps:
            save(step + 1)
    log_file.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
