"""Training the segmentation regressor: its data set, Adam on MSE with early stopping on the validation loss (paper
section 3.2: lr 1e-3, batch 32, the weights of the epoch with the lowest validation loss), the within-image ranking
loss, and fine-tuning on a few labelled images of a new data set (``sampot calibrate``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from sampot_lib.defaults import (
    BATCH_SIZE,
    EPOCHS,
    LR_DECAY_FACTOR,
    LR_DECAY_PATIENCE,
    LR_SCHEDULES,
    RANK_GROUP,
    RANK_WEIGHT,
    REGRESSOR_PATIENCE,
    REGRESSOR_PRECISION,
    REGRESSOR_PRECISIONS,
    TUNE_EPOCHS,
    TUNE_LR,
)
from sampot_lib.errors import SampotError, number, whole
from sampot_lib.method.regressor import SegmentationRegressor


@dataclass
class RegressorData:
    """A regressor training set at the regressor's input size S.

    Attributes:
        images: N x S x S uint8 images.
        masks: N x S x S uint8 masks (0..255 soft values).
        dice: N true Dice of each mask at full resolution.
        kind: N labels: ``synthetic``, or ``model_<how it was prompted>`` for the model's own masks (for example
            ``model_band``, ``model_outside``).
        image_id: N source image ids.
        confidence: N, the model's IoU prediction for its own masks (NaN for synthetic masks), or None.
    """

    images: np.ndarray
    masks: np.ndarray
    dice: np.ndarray
    kind: np.ndarray
    image_id: np.ndarray
    confidence: np.ndarray | None = None

    _FIELDS = ("images", "masks", "dice", "kind", "image_id", "confidence")

    def __len__(self) -> int:
        return len(self.dice)

    def _confidence(self) -> np.ndarray:
        return self.confidence if self.confidence is not None else np.full(len(self), np.nan, dtype=np.float32)

    def subset(self, keep: np.ndarray) -> RegressorData:
        """The samples ``keep`` picks.

        Args:
            keep: A boolean mask of length N, or indices.

        Returns:
            A new set holding those samples.
        """
        return RegressorData(*(getattr(self, f)[keep] for f in self._FIELDS[:-1]), confidence=self._confidence()[keep])

    @staticmethod
    def concat(parts: list[RegressorData]) -> RegressorData:
        """Sets one after another.

        Args:
            parts: The sets, at one input size.

        Returns:
            One set holding every sample of ``parts`` in order.
        """
        cols = [np.concatenate([getattr(p, f) for p in parts]) for f in RegressorData._FIELDS[:-1]]
        return RegressorData(*cols, confidence=np.concatenate([p._confidence() for p in parts]))

    def tensors(
        self, device: torch.device | str = "cpu", channels_last: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The set as tensors.

        Args:
            device: Where the tensors go.
            channels_last: Put the images and masks in that memory layout (see :func:`fit_regressor`).

        Returns:
            (images N x 1 x S x S, masks N x 1 x S x S, both 0..1; Dice N), float32 on ``device``.
        """
        layout = torch.channels_last if channels_last else torch.contiguous_format
        img = (torch.as_tensor(self.images, device=device)[:, None].float() / 255.0).contiguous(memory_format=layout)
        msk = (torch.as_tensor(self.masks, device=device)[:, None].float() / 255.0).contiguous(memory_format=layout)
        return img, msk, torch.as_tensor(self.dice, device=device).float()


@torch.no_grad()
def predict_dice(
    regressor: SegmentationRegressor, data: RegressorData, batch_size: int = 64, device: str = "cpu"
) -> np.ndarray:
    """The regressor's scores of every (image, mask) pair of a training set.

    Args:
        regressor: The regressor (put on ``device`` in eval mode).
        data: The pairs.
        batch_size: The pairs scored at a time.
        device: Where to score.

    Returns:
        N scores.
    """
    img, msk, _ = data.tensors(device, channels_last=True)
    return _scores(regressor.to(device).eval(), img, msk, batch_size)


@torch.no_grad()
def _scores(regressor: SegmentationRegressor, img: torch.Tensor, msk: torch.Tensor, batch_size: int = 64) -> np.ndarray:
    """Scores (N) of an eval-mode regressor for images and masks N x 1 x S x S already in tensors."""
    out = [regressor(img[i : i + batch_size], msk[i : i + batch_size]) for i in range(0, len(img), batch_size)]
    return torch.cat(out).cpu().numpy() if out else np.zeros(0)


def fit_regressor(
    train: RegressorData,
    val: RegressorData,
    *,
    epochs: int = EPOCHS,
    batch_size: int = BATCH_SIZE,
    lr: float = 1e-3,
    seed: int = 0,
    device: str = "cpu",
    widths: tuple[int, ...] = (16, 32, 64, 128),
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    init: SegmentationRegressor | None = None,
    patience: int | None = REGRESSOR_PATIENCE,
    rank_weight: float = RANK_WEIGHT,
    rank_group: int = RANK_GROUP,
    lr_schedule: str = "constant",
    lr_decay_patience: int = LR_DECAY_PATIENCE,
    lr_decay_factor: float = LR_DECAY_FACTOR,
    precision: str = REGRESSOR_PRECISION,
) -> tuple[SegmentationRegressor, list[dict[str, float]]]:
    """Train a segmentation regressor with Adam + MSE, keeping the weights of the best epoch.

    The weights returned are those of the epoch with the lowest validation loss: the validation MSE, plus
    ``rank_weight`` times the within-image loss when that weight is > 0.

    Args:
        train: The training set, at the regressor's input size S.
        val: The validation set, at the same size; its loss picks the epoch whose weights are kept.
        epochs: The most epochs to run.
        batch_size: Samples per batch.
        lr: Adam's learning rate.
        seed: Seed of the starting weights and of the batches' order.
        device: Where to train (e.g. ``"cpu"``, ``"cuda"``).
        widths: Channels of the four stride-2 convolutions (with ``init``: its own are used).
        progress: Show a progress bar.
        log: Receives one line per epoch (and one when ``patience`` stops training); None: no lines.
        init: Start from a copy of this regressor's weights (fine-tuning; ``widths`` is then its own, and ``init``
            itself is left unchanged). Its starting weights are then a candidate too (history row ``epoch`` 0): with
            ``epochs=0``, or when no epoch lowers the validation MSE, the copy is returned as it was. None: new
            weights.
        patience: Stop after this many epochs in a row without a new lowest validation loss (the history then ends
            before ``epochs``; the best epoch's weights are returned as always). 0 or None: run all ``epochs``.
        rank_weight: > 0 adds the within-image loss (:func:`within_image_loss`) with this weight: each batch then
            holds runs of ``rank_group`` masks of one image (:func:`image_grouped_order`), the history gains
            ``val_pair_mse`` (the within-image loss over every pair of masks of one validation image) and the
            validation loss that picks the epoch is ``val_mse + rank_weight * val_pair_mse``. 0: the MSE alone,
            batches drawn at random.
        rank_group: With ``rank_weight`` > 0, how many masks of one image come in a run (1: a plain shuffle).
        lr_schedule: ``"constant"``: Adam at ``lr`` throughout (the paper). ``"plateau"``: the learning rate is
            multiplied by ``lr_decay_factor`` after ``lr_decay_patience`` epochs in a row without a lower validation
            loss (torch's ``ReduceLROnPlateau`` on the loss that picks the epoch).
        lr_decay_patience: See ``lr_schedule``.
        lr_decay_factor: See ``lr_schedule``.
        precision: ``"float32"``, or ``"bfloat16"``: each training batch's forward pass under bfloat16 autocast on
            ``device`` (weights, loss, optimiser and validation stay float32; see
            :data:`~sampot_lib.defaults.REGRESSOR_PRECISION`).

    Returns:
        The pair (regressor, history), the regressor in eval mode with the best epoch's weights and the per-epoch
        history, one row per epoch run: ``{"epoch", "train_mse", "val_mse", "lr"}`` (``lr``: the rate the epoch
        trained at; and ``"val_pair_mse"`` with ``rank_weight`` > 0).

    Raises:
        SampotError: An empty training or validation set, a ``patience``, ``rank_weight``, ``rank_group`` or
            learning-rate schedule setting out of range, an unknown ``precision``, an ``init`` that reads another
            input size than the training set's, or a loss that is no longer finite (training diverged).
    """
    if len(train) == 0 or len(val) == 0:
        raise SampotError(f"regressor training needs non-empty train and val sets (got {len(train)} and {len(val)}).")
    patience = whole(patience, "patience", low=0) if patience is not None else 0
    if isinstance(rank_weight, bool) or not isinstance(rank_weight, (int, float)) or not 0 <= rank_weight < np.inf:
        raise SampotError(f"the within-image loss weight (--rank-weight) must be a finite number >= 0, got "
                          f"{rank_weight!r}.")  # fmt: skip
    rank_group = whole(rank_group, "rank_group", low=1)
    if lr_schedule not in LR_SCHEDULES:
        raise SampotError(f"unknown learning-rate schedule {lr_schedule!r}; known: {', '.join(LR_SCHEDULES)}.")
    lr_decay_patience = whole(lr_decay_patience, "lr_decay_patience", low=0)
    lr_decay_factor = number(lr_decay_factor, "lr_decay_factor", low=0, high=1, low_open=True, high_open=True)
    if precision not in REGRESSOR_PRECISIONS:
        raise SampotError(f"unknown regressor training precision {precision!r}; known: "
                          f"{', '.join(REGRESSOR_PRECISIONS)}.")  # fmt: skip
    size = train.images.shape[-1]
    torch.manual_seed(seed)
    if init is not None:
        if init.input_size != size:
            raise SampotError(f"the starting regressor reads {init.input_size}x{init.input_size} inputs, but the "
                              f"training set holds {size}x{size} ones; build the set at its input size.")  # fmt: skip
        model = copy.deepcopy(init).to(device)
    else:
        model = SegmentationRegressor(size, widths).to(device)
    # channels-last weights and inputs: the same network, 1.4x faster to train on a CPU (measured on 2 cores:
    # 5.5 -> 3.9 s an epoch of 2304 samples at 128 px); the returned regressor is back in the usual layout
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    plateau = (
        torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=lr_decay_factor, patience=lr_decay_patience)
        if lr_schedule == "plateau"
        else None
    )
    gen = torch.Generator().manual_seed(seed)
    img, msk, target = train.tensors(device, channels_last=True)
    val_img, val_msk, _ = val.tensors(device, channels_last=True)  # once, not every epoch
    train_codes = torch.as_tensor(np.unique(train.image_id, return_inverse=True)[1].reshape(-1), device=device)
    val_codes = np.unique(val.image_id, return_inverse=True)[1].reshape(-1)

    def val_losses() -> dict[str, float]:
        err = _scores(model.eval(), val_img, val_msk) - val.dice
        out = {"val_mse": float(np.mean(err**2))}
        if rank_weight:
            out["val_pair_mse"] = pair_mse(err, val_codes)
        return out

    def val_loss(row: dict[str, float]) -> float:
        return row["val_mse"] + rank_weight * row.get("val_pair_mse", 0.0)

    best_state, best_val, history, stale = None, float("inf"), [], 0
    if init is not None:  # the starting point competes: fine-tuning never returns weights worse on val than it
        start = val_losses()
        best_val = val_loss(start)
        start_train = float(np.mean((_scores(model.eval(), img, msk) - train.dice) ** 2))
        best_state = copy.deepcopy(model.state_dict())
        history.append({"epoch": 0, "train_mse": start_train} | start)
    bar = tqdm(range(1, epochs + 1), desc="regressor", unit="epoch", disable=not progress)
    for epoch in bar:
        model.train()
        if rank_weight:
            order = image_grouped_order(train.image_id, rank_group, gen).to(device)
        else:
            order = torch.randperm(len(train), generator=gen).to(device)
        total = 0.0
        for i in range(0, len(train), batch_size):
            idx = order[i : i + batch_size]
            if len(idx) < 2:  # batch norm needs two samples
                continue
            with torch.autocast(torch.device(device).type, torch.bfloat16, enabled=precision == "bfloat16"):
                pred = model(img[idx], msk[idx])  # float32 scores either way (the sigmoid is float32)
            loss = F.mse_loss(pred, target[idx])
            if rank_weight:
                loss = loss + rank_weight * within_image_loss(pred, target[idx], train_codes[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += F.mse_loss(pred.detach(), target[idx]).item() * len(idx)
        train_mse = total / len(train)
        row = {"epoch": epoch, "train_mse": train_mse} | val_losses() | {"lr": opt.param_groups[0]["lr"]}
        history.append(row)
        epoch_val = val_loss(row)
        if not (np.isfinite(train_mse) and np.isfinite(epoch_val)):
            raise SampotError(
                f"regressor training diverged in epoch {epoch}: its loss is no longer a finite number (train "
                f"{train_mse:g}, validation {epoch_val:g}); lower the learning rate (lr={lr:g})"
                + (
                    f" or the within-image loss weight (rank_weight={rank_weight:g}, --rank-weight)."
                    if rank_weight
                    else "."
                )
            )
        if plateau is not None:
            plateau.step(epoch_val)
        if epoch_val < best_val:
            best_val, best_state, stale = epoch_val, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
        bar.set_postfix(train=f"{train_mse:.4f}", val=f"{epoch_val:.4f}", best=f"{best_val:.4f}")
        if log is not None:
            log(f"epoch {epoch:3d}  train MSE {train_mse:.5f}  val loss {epoch_val:.5f}  best {best_val:.5f}")
        if patience and stale >= patience and epoch < epochs:
            if log is not None:
                log(f"stopped after epoch {epoch}: no lower val loss for {patience} epochs (patience)")
            break
    model.load_state_dict(best_state)
    return model.to(memory_format=torch.contiguous_format).eval(), history


def image_grouped_order(image_ids: np.ndarray, group: int, gen: torch.Generator) -> torch.Tensor:
    """A permutation of ``len(image_ids)`` samples in which the samples of one image come in runs of ``group`` (an
    image's last run may be shorter), each image's samples shuffled and the runs in random order (``gen``)."""
    codes = np.unique(image_ids, return_inverse=True)[1].reshape(-1)
    runs: list[np.ndarray] = []
    for code in range(int(codes.max()) + 1 if len(codes) else 0):
        own = np.flatnonzero(codes == code)
        own = own[torch.randperm(len(own), generator=gen).numpy()]
        runs += [own[i : i + group] for i in range(0, len(own), group)]
    if not runs:
        return torch.zeros(0, dtype=torch.long)
    return torch.as_tensor(np.concatenate([runs[i] for i in torch.randperm(len(runs), generator=gen).tolist()]))


def within_image_loss(scores: torch.Tensor, dice: torch.Tensor, image_codes: torch.Tensor) -> torch.Tensor:
    """Mean over pairs (i, j) of masks of the same image of ((s_i - s_j) - (d_i - d_j))^2: how far the score's
    difference between two masks of one image is from their Dice difference. scores, dice, image_codes: N.
    A zero (that keeps the graph) when no two masks share an image."""
    err = scores - dice
    same = torch.triu(image_codes[:, None] == image_codes[None, :], diagonal=1)
    if not bool(same.any()):
        return err.sum() * 0.0
    return ((err[:, None] - err[None, :])[same] ** 2).mean()


def pair_mse(err: np.ndarray, image_codes: np.ndarray) -> float:
    """:func:`within_image_loss` over every pair of masks of one image, from the errors ``score - dice`` (N)."""
    total, pairs = 0.0, 0
    for code in np.unique(image_codes):
        e = err[image_codes == code]
        d = e[:, None] - e[None, :]
        total += float((d**2).sum()) / 2  # each pair once; the diagonal is 0
        pairs += len(e) * (len(e) - 1) // 2
    return total / pairs if pairs else 0.0


def fine_tune(
    regressor: SegmentationRegressor,
    samples_train: RegressorData,
    samples_val: RegressorData,
    *,
    epochs: int = TUNE_EPOCHS,
    lr: float = TUNE_LR,
    seed: int = 0,
    batch_size: int = BATCH_SIZE,
    device: str = "cpu",
    progress: bool = False,
) -> tuple[SegmentationRegressor, list[dict[str, float]]]:
    """Fine-tune a copy of a regressor (left unchanged), starting from its weights, with Adam + MSE.

    The samples must be at the regressor's input size
    (:func:`sampot_lib.experiment.regressor_transfer.transfer_samples` with ``size=regressor.input_size``). Batch
    norm's running statistics adapt to the new images too (the network trains in train mode).

    Args:
        regressor: The regressor.
        samples_train: The masks it is tuned on.
        samples_val: The masks that choose the epoch.
        epochs: The epochs, a whole number >= 0.
        lr: Adam's learning rate, a finite number > 0.
        seed: The seed of the batches' order.
        batch_size: The batch size.
        device: Where to train.
        progress: Show a progress bar.

    Returns:
        The pair (regressor, history), the weights of the epoch with the lowest MSE on ``samples_val`` (the starting
        weights count as epoch 0, so ``epochs=0`` returns them unchanged), and one row (epoch, train_mse, val_mse) per
        epoch.

    Raises:
        SampotError: ``epochs`` or ``lr`` out of range.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise SampotError(f"fine-tuning epochs must be a whole number >= 0, got {epochs!r}.")
    if not (np.isfinite(lr) and lr > 0):
        raise SampotError(f"fine-tuning learning rate must be a finite number > 0, got {lr!r}.")
    return fit_regressor(samples_train, samples_val, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                         device=device, progress=progress, init=regressor)  # fmt: skip
