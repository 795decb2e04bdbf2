"""What a segmentation regressor learned from, and whether it fits a use: the checks every command runs before a
regressor scores anything (the model, structure and settings it was trained for; the images it saw, so that a test on
them is refused)."""

from __future__ import annotations

from typing import Any

from sampot_lib.errors import SampotError
from sampot_lib.models.registry import registry_identity

#: What a consumer compares with the regressor's record, and how a mismatch is named.
_CHECKED = {
    "model": "the segmentation model",
    "mask_output": "the model's mask output",
    "structure": "the structure",
    "prompt": "the prompt kind",
    "sharpness": "the sigmoid sharpness",
    "input_size": "the input size",
}


#: What to do instead of a test on images the regressor learned from: in a run, and in ``sampot evolve --mask``.
UNMEASURED_ADVICE = "`sampot evolve` without --mask evolves such an image without measuring it."
_RUN_ADVICE = ("run with the --out (and --seed) it was calibrated in, whose test part holds none of its labelled "
               "images, or calibrate it again (sampot calibrate) in this run's folder.")  # fmt: skip


def check_regressor(
    meta: dict[str, Any],
    expected: dict[str, Any],
    allow_foreign: bool = False,
    one_image: bool = False,
    can_allow: bool = True,
) -> list[str]:
    """Check that a regressor learned from what it is about to score; return warnings, raise on a mismatch.

    An image counts as seen when its image file is, whatever its mask (a second reader's outline of the same X-ray),
    or, where the records hold no image hashes (``train_images``, ``val_images``, ``calibration_images``), when its
    mask file is: identical masks of different images are not a leak. A setting the record lacks (a file from an
    older sampot) gives a warning, never an error.

    Args:
        meta: The regressor's record (:func:`~sampot_lib.method.regressor.load_regressor`'s second value; written by
            the pipeline's training stage).
        expected: Any of ``model``, ``mask_output``, ``structure``, ``prompt``, ``sharpness``, ``input_size`` (what
            the caller will score), ``checkpoint`` (the weights in use, as
            :func:`~sampot_lib.models.registry.checkpoint_identity` gives them: compared by sha256 with the record's
            ``checkpoint_sha256``, or with what its ``checkpoint`` name tells; a record without one is not checked),
            and ``test_masks`` ({image id: mask sha256} of the images it will be evaluated on;
            see :func:`sampot_lib.experiment.provenance.mask_hashes`), with ``test_images`` ({image id: image sha256})
            when known: none of them may be among the images it was trained or validated on (``train_masks``,
            ``val_masks``) or calibrated on (``calibration_masks``, written by
            :mod:`sampot_lib.experiment.calibration`).
        allow_foreign: The user asked on purpose for a regressor trained elsewhere: every mismatch is returned as a
            warning for the results to record instead of raised.
        one_image: The test is one image's (``sampot evolve --mask``): a refusal advises evolving it without its
            mask, not another run.
        can_allow: The caller has ``--allow-foreign-regressor`` (run, evolve, score, heatmap): a refusal names it.
            Otherwise (app, calibrate, the widget) it advises the settings the regressor was trained with.

    Returns:
        The warnings (settings the record lacks; test images with the ids of its training or validation images but
        other files, :func:`same_ids_note`; and with ``allow_foreign`` each mismatch, prefixed
        ``"foreign regressor: "``).

    Raises:
        SampotError: A mismatch, naming both values and what to do (unless ``allow_foreign``); a test image among its
            calibration images, even with ``allow_foreign`` (a calibrated regressor is passed as a foreign one on the
            very data set it was calibrated on, and scoring its own labelled images would inflate the results); a test
            image among a shipped regressor's training images.
    """
    warnings: list[str] = []
    problems: list[str] = []
    refused: list[str] = []  # refused even with allow_foreign
    for key, what in _CHECKED.items():
        if key not in expected or expected[key] is None:
            continue
        if key not in meta:
            warnings.append(f"the regressor records no {key} ({what}; a file from an older sampot?): not checked")
            continue
        have, want = meta[key], expected[key]
        if key == "sharpness":
            same = isinstance(have, (int, float)) and abs(float(have) - float(want)) <= 1e-9 * max(1.0, abs(want))
        else:
            same = str(have) == str(want)
        if not same:
            problems.append(f"it was trained with {key} {have!r} but is used with {key} {want!r} ({what})")
    if expected.get("checkpoint"):
        problems += _checkpoint_problem(meta, expected["checkpoint"])
    test = expected.get("test_masks")
    if test:
        if "train_masks" not in meta and not meta.get("val_masks"):
            warnings.append("the regressor records no training images (a file from an older sampot?): whether the "
                            "test images were among them is not checked")  # fmt: skip
        images = expected.get("test_images") or {}
        labelled = same_labelled(
            test, expected.get("test_images"), meta.get("calibration_masks", {}), meta.get("calibration_images", {})
        )
        leaked = trained_on(meta, test, expected.get("test_images"))
        # the same image file under another mask (a second reader's outline) is a leak too
        exact = {i for i, _ in leaked + labelled}
        leaked += [p for p in images_seen(meta, images) if p[0] not in exact]
        labelled += [p for p in calibration_seen(meta, images) if p[0] not in exact]
        if leaked:
            text = f"{len(leaked)} test image(s) were among its training or validation images: {_named(leaked)}"
            if meta.get("shipped"):  # a shipped regressor's training images are never a test, foreign or not
                raise SampotError(
                    f"the shipped regressor {meta['shipped'].get('name', '')!r} cannot be evaluated "
                    f"here: {text}. Test it on images it never saw (JSRT's test split, or your own); "
                    + UNMEASURED_ADVICE
                )
            problems.append(text)
        if labelled:
            where = meta.get("calibrated_on", {}).get("data", "an unrecorded data set")
            refused.append(f"{len(labelled)} test image(s) were among the labelled images it was calibrated on "
                           f"({where}): {_named(labelled)}")  # fmt: skip
        note = same_ids_note(meta, test, matched=[i for i, _ in leaked])
        if note:
            warnings.append(note)
    if refused:
        raise SampotError(
            f"the regressor cannot be evaluated here: {'; '.join(refused)}. Test it on images it never saw: "
            + (UNMEASURED_ADVICE if one_image else _RUN_ADVICE)
        )
    if problems and not allow_foreign:
        origin = meta.get("data", "an unrecorded data set")
        raise SampotError(
            f"the regressor (trained on {origin}) does not fit this use: {'; '.join(problems)}. Train one for these "
            "settings (sampot train-regressor / sampot run with the same --model, --checkpoint, --mask-output, "
            "--structure and --sharpness, on a split whose test images it never saw), "
            + ("or use it on purpose with --allow-foreign-regressor, and the results record these differences."
               if can_allow else "or use the settings it was trained with.")
        )  # fmt: skip
    return warnings + [f"foreign regressor: {p}" for p in problems]


def trained_on(meta: dict[str, Any], masks: dict[str, str], images: dict[str, str] | None) -> list[tuple[str, str]]:
    """The labelled images (``masks`` {id: mask sha256}, ``images`` {id: image sha256} or None) that were among a
    regressor's training or validation images (its record's ``train_masks`` / ``val_masks`` and their images), as
    :func:`same_labelled` gives them."""
    seen = {**meta.get("train_masks", {}), **meta.get("val_masks", {})}
    seen_images = {**meta.get("train_images", {}), **meta.get("val_images", {})}
    return same_labelled(masks, images, seen, seen_images)


def images_seen(meta: dict[str, Any], images: dict[str, str]) -> list[tuple[str, str]]:
    """The images (``images`` {id: image sha256}) whose file is among a regressor's training or validation images
    (its record's ``train_images`` / ``val_images``), with no mask to compare: [(id, id it was seen as)], by id."""
    seen: dict[str, str] = {}
    for seen_id, digest in {**meta.get("train_images", {}), **meta.get("val_images", {})}.items():
        seen.setdefault(digest, seen_id)
    return [(image_id, seen[digest]) for image_id, digest in sorted(images.items()) if digest in seen]


def calibration_seen(
    meta: dict[str, Any], images: dict[str, str], masks: dict[str, str] | None = None
) -> list[tuple[str, str]]:
    """The images (``images`` {id: image sha256}, with ``masks`` {id: mask sha256} where known) among the labelled
    images a regressor was calibrated on (its record's ``calibration_images`` / ``calibration_masks``): [(id, id it
    was seen as)], by id. Without masks an image counts by its file alone."""
    if masks is not None:
        return same_labelled(masks, images, meta.get("calibration_masks", {}), meta.get("calibration_images", {}))
    seen: dict[str, str] = {}
    for seen_id, digest in meta.get("calibration_images", {}).items():
        seen.setdefault(digest, seen_id)
    return [(image_id, seen[digest]) for image_id, digest in sorted(images.items()) if digest in seen]


def calibration_checked(meta: dict[str, Any]) -> set[str]:
    """The calibration images (keys of the record's ``calibration_masks``) that were only held out to check a
    calibration, never fitted on: its ``calibration_checks``, or for a record without them the ``check_ids`` of its
    one calibration."""
    if "calibration_checks" in meta:
        return set(meta["calibration_checks"])
    return set(meta.get("calibrated_on", {}).get("check_ids", []))


def split_calibration_seen(
    meta: dict[str, Any], seen: list[tuple[str, str]]
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """``seen`` (:func:`calibration_seen`) as (those the calibration fitted on, those it only checked on)."""
    checked = calibration_checked(meta)
    return [p for p in seen if p[1] not in checked], [p for p in seen if p[1] in checked]


def check_note(seen: list[tuple[str, str]], of: int) -> str:
    """The warning for images held out to check a calibration (:func:`calibration_checked`): not learned from, but
    the calibration's report, and its advice to use the calibrated regressor, were measured on them."""
    which = f"{len(seen)} of the {of} images {'is' if len(seen) == 1 else 'are'}" if of > 1 else "the image is"
    return (
        f"{which} among the images held out to check the regressor's calibration ({_named(seen)}): it did not learn "
        f"from {'it' if len(seen) == 1 else 'them'}, but the calibration was judged on "
        f"{'it' if len(seen) == 1 else 'them'}, so {'it is' if len(seen) == 1 else 'they are'} no fresh test of it."
    )


def seen_note(seen: list[tuple[str, str]], of: int, what: str = "the regressor's training or validation images") -> str:
    """The warning for images a regressor learned from (``what``: which of them), used without a truth: its score is
    optimistic there."""
    which = f"{len(seen)} of the {of} images {'is' if len(seen) == 1 else 'are'}" if of > 1 else "the image is"
    return (
        f"{which} among {what} ({_named(seen)}): it learned the Dice of their masks, so its predicted Dice, and the "
        "do-no-harm rule that reads it, are optimistic there."
    )


#: How :func:`seen_note` names the images a regressor was calibrated on.
CALIBRATION_IMAGES = "the labelled images the regressor was calibrated on"


def same_ids_note(meta: dict[str, Any], ids: Any, matched: Any = ()) -> str | None:
    """The warning for images that have the ids of a shipped regressor's training or validation images (its record's
    ``train_masks``, ``val_masks``, ``train_images``, ``val_images``) but were not found to be the same files: a
    resized or re-exported copy of the same public X-ray (JSRT's ``JPCLN001``, ...) is missed by the file check. None
    when there is none, and for a regressor trained here: its ids are those of the user's own data set, which other
    sets share by chance (every phantom set has a ``phantom_0000``).

    Args:
        meta: The regressor's record.
        ids: The image ids in use.
        matched: The ids already found to be the same files (warned about or refused elsewhere).
    """
    if not meta.get("shipped"):
        return None
    seen = {k for key in ("train_masks", "val_masks", "train_images", "val_images") for k in meta.get(key, {})}
    same = sorted((set(ids) - set(matched)) & seen)
    if not same:
        return None
    several = len(same) > 1
    which = f"images {_named([(i, i) for i in same])} have the ids" if several else f"image {same[0]} has the id of one"
    return (
        f"{which} of the regressor's training images (other pixels: resized or re-exported?); if "
        f"{'they are the same X-rays' if several else 'it is the same X-ray'}, its numbers on "
        f"{'them' if several else 'it'} are optimistic."
    )


def unmeasured_notes(meta: dict[str, Any], images: dict[str, str]) -> list[str]:
    """The warnings for images (``images`` {id: image sha256}) a regressor scores without a truth: those it learned
    from (its training, validation or calibration images, by file), and those that only have the ids of its
    training images (a resized copy is another file)."""
    seen = images_seen(meta, images)
    calibrated = calibration_seen(meta, images)
    learned, checked = split_calibration_seen(meta, calibrated)
    notes = [seen_note(seen, len(images))] if seen else []
    if learned:
        notes.append(seen_note(learned, len(images), CALIBRATION_IMAGES))
    if checked:
        notes.append(check_note(checked, len(images)))
    same_ids = same_ids_note(meta, images, matched=[i for i, _ in seen + calibrated])
    return notes + ([same_ids] if same_ids else [])


def _checkpoint_problem(meta: dict[str, Any], want: dict[str, Any]) -> list[str]:
    """[the mismatch] when the weights in use (``want``, :func:`~sampot_lib.models.registry.checkpoint_identity`)
    are not those the regressor was trained with, else []. A record of the registry's weights, or of a file named as
    the registry's, stands for the registry's sha256; a record without a sha256 is otherwise compared by name."""
    name = meta.get("checkpoint")
    if name is None and "checkpoint_sha256" not in meta:
        return []
    have = meta.get("checkpoint_sha256") or registry_identity(meta.get("model"), name)
    if have and want.get("sha256"):
        if have == want["sha256"]:
            return []
        why = f"sha256 {have[:12]}... and {want['sha256'][:12]}..."
    elif name is None or want.get("name") is None or str(name) == str(want["name"]):
        return []
    else:
        why = "the record names the file only"
    return [f"it was trained with checkpoint {name!r} but is used with checkpoint {want.get('name')!r} (the model's "
            f"weights; {why})"]  # fmt: skip


def _named(pairs: list[tuple[str, str]]) -> str:
    """[(id, id it was seen as)] as text: the first five ("a, b (= its c)") and how many more."""
    shown = ", ".join(t if t == s else f"{t} (= its {s})" for t, s in pairs[:5])
    return shown + (f" and {len(pairs) - 5} more" if len(pairs) > 5 else "")


def same_labelled(
    masks: dict[str, str],
    images: dict[str, str] | None,
    seen_masks: dict[str, str],
    seen_images: dict[str, str],
) -> list[tuple[str, str]]:
    """The labelled images that are among those seen.

    An image is seen when its mask file is, and its image file too where both sides record it (two images may share a
    mask file without being the same labelled image).

    Args:
        masks: The labelled images, {id: mask sha256}.
        images: Their images, {id: image sha256}; None: not known.
        seen_masks: The images seen, {id: mask sha256}.
        seen_images: Their images, {id: image sha256} (may be empty).

    Returns:
        [(id, id it was seen as)], by id.
    """
    by_hash: dict[str, list[str]] = {}
    for seen_id, digest in seen_masks.items():
        by_hash.setdefault(digest, []).append(seen_id)
    out = []
    for image_id, digest in sorted(masks.items()):
        for seen_id in by_hash.get(digest, []):
            mine, theirs = (images or {}).get(image_id), seen_images.get(seen_id)
            if mine is None or theirs is None or mine == theirs:
                out.append((image_id, seen_id))
                break
    return out


def describe_origin(meta: dict[str, Any]) -> dict[str, Any]:
    """The data set a regressor learned from, as the results name it.

    Args:
        meta: The regressor's record.

    Returns:
        Those of its entries the record holds (the data's path and identity hash, structure, model, mask output,
        prompt, image counts ``n_train_ids`` and ``n_val_ids``, split hash, seed, sampot version and ``calibrated_on``).
    """
    keys = ("data", "data_identity", "structure", "model", "mask_output", "prompt", "n_train_ids", "n_val_ids",
            "split_hash", "seed", "sampot_version", "calibrated_on")  # fmt: skip
    return {k: meta[k] for k in keys if k in meta}
