"""Markdown tables of a run's numbers for the book and the command line: the spread over seeds, the optimiser
comparison and its verdict."""

from __future__ import annotations

from typing import Any

import numpy as np

from sampot_lib.defaults import RULE

SPREAD_ROWS = (
    ("n", "test images", 0), ("improved", "images improved", 1), ("worse", "images worse", 1),
    ("catastrophes", "catastrophic drops (> 0.2)", 1), ("mean_dice_initial", "mean Dice, user's prompt", 3),
    ("mean_dice_evolved", "mean Dice, evolved", 3), ("mean_gain", "mean Dice gain", 4),
)  # fmt: skip

SCORER_LABELS = {
    "regressor": "regressor (SAMPOT)",
    "blend": "regressor + IoU head blend",
    "confidence": "model's IoU head",
    "oracle": "oracle (ceiling)",
    RULE: "do-no-harm rule (blend's predicted gain, margin chosen on val)",
}


SPREAD_R = (("r_regressor_all", "r(regressor, Dice), all test masks"),
            ("r_regressor_initial", "r(regressor, Dice), user's prompts"),
            ("r_confidence_initial", "r(model confidence, Dice), user's prompts"))  # fmt: skip


def seeds_markdown(spread: dict[str, Any], groups: dict[str, str]) -> str:
    """Markdown of :func:`sampot_lib.experiment.summary.summarise_seeds`: one column per evolution group (``groups``:
    {summary key: column label}), each number the mean over seeds with its sample standard deviation in brackets."""

    def cell(group: str, key: str, digits: int) -> str:
        m, sd = spread["mean"].get(group, {}).get(key), spread["sd"].get(group, {}).get(key)
        if m is None:
            return "n/a"
        text = f"{m:.{digits}f}" if digits else f"{m:.0f}"
        return text + (f" ({sd:.{digits or 1}f})" if sd is not None and digits else "")

    present = {g: label for g, label in groups.items() if g in spread["mean"]}
    lines = ["| over seeds " + ", ".join(map(str, spread["seeds"])) + " | " + " | ".join(present.values()) + " |",
             "|---" * (len(present) + 1) + "|"]  # fmt: skip
    lines += [f"| {label} | " + " | ".join(cell(g, key, d) for g in present) + " |" for key, label, d in SPREAD_ROWS]
    lines += [f"| {label} | {cell('regressor', key, 2)} |" + " |" * (len(present) - 1) for key, label in SPREAD_R]
    return "\n".join(lines)


def optimizer_markdown(rows: list[dict[str, Any]]) -> str:
    """Markdown of :func:`optimizer_rows`: per structure, score, optimiser and budget, the mean Dice of the user's
    prompt and of the winner, how many images improved, and seconds per image; the best optimiser of each
    (structure, score, budget) in bold."""
    head = "| structure | score | model calls | optimizer | Dice, user's prompt | Dice, winner | improved | s / image |"
    lines = [head, "|---" * 8 + "|"]
    structures = list(dict.fromkeys(r["structure"] for r in rows))  # in the order they were run
    scores = list(dict.fromkeys(r["score"] for r in rows))
    keys = sorted({(r["structure"], r["score"], r["budget"]) for r in rows},
                  key=lambda k: (structures.index(k[0]), scores.index(k[1]), k[2]))  # fmt: skip
    for structure, score, budget in keys:
        sel = [r for r in rows if (r["structure"], r["score"], r["budget"]) == (structure, score, budget)]
        by_opt = {o: [r for r in sel if r["optimizer"] == o] for o in dict.fromkeys(r["optimizer"] for r in sel)}
        ends = {o: float(np.mean([r["dice_end"] for r in rs])) for o, rs in by_opt.items()}
        top = max(ends.values())
        for opt, rs in by_opt.items():
            start, end = np.array([r["dice_start"] for r in rs]), np.array([r["dice_end"] for r in rs])
            win = f"**{end.mean():.3f}**" if ends[opt] == top else f"{end.mean():.3f}"
            lines.append(
                f"| {structure} | {SCORER_LABELS.get(score, score)} | {budget} | {opt} | {start.mean():.3f} | {win} "
                f"| {int((end > start + 1e-3).sum())}/{len(rs)} | {np.mean([r['seconds'] for r in rs]):.1f} |"
            )
    return "\n".join(lines)


def optimizer_verdict(rows: list[dict[str, Any]], tie: float = 0.002) -> str:
    """Markdown: which optimiser wins where, in words and numbers, from :func:`optimizer_rows`: for each structure and
    score, the optimisers ranked by mean winning Dice at each budget, and how often each one was best (a mean within
    ``tie`` of the best counts as a shared win)."""
    wins: dict[str, int] = {}
    lines, cases = [], 0
    for structure in dict.fromkeys(r["structure"] for r in rows):
        for score in dict.fromkeys(r["score"] for r in rows):
            parts = []
            for budget in sorted({r["budget"] for r in rows}):
                sel = [r for r in rows if (r["structure"], r["score"], r["budget"]) == (structure, score, budget)]
                if not sel:
                    continue
                means = {o: float(np.mean([r["dice_end"] for r in sel if r["optimizer"] == o]))
                         for o in dict.fromkeys(r["optimizer"] for r in sel)}  # fmt: skip
                top = max(means.values())
                cases += 1
                for o, m in means.items():
                    wins[o] = wins.get(o, 0) + int(m >= top - tie)
                ranked = sorted(means.items(), key=lambda kv: -kv[1])
                parts.append(f"{budget} calls: " + " > ".join(f"{o} {m:.3f}" for o, m in ranked))
            n = len({r["image_id"] for r in rows if r["structure"] == structure})
            images = f"{n} image" + ("s" if n != 1 else "")
            lines.append(f"- **{structure}, {SCORER_LABELS.get(score, score)}** ({images}): " + "; ".join(parts))
    counts = ", ".join(f"{o} {k} of {cases}" for o, k in sorted(wins.items(), key=lambda kv: -kv[1]))
    head = (f"Best (or within {tie} of the best) mean Dice of the winner, over every structure, score and budget: "
            f"{counts}. On this few images a difference of a few thousandths is noise.")  # fmt: skip
    return head + "\n\n" + "\n".join(lines)
