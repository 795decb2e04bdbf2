"""Build the book: phantom data if no DATA is given, every chapter notebook run by papermill, then jupyter-book.

    python scripts/build_book.py                         # offline defaults: sam_nano on the phantom set
    DATA=../shared/data/jsrt_scr python scripts/build_book.py
    DATA=... MODEL=vit_b CHECKPOINT=... DEVICE=cuda python scripts/build_book.py
    MAX_IMAGES=6 EPOCHS=5 STEPS=10 python scripts/build_book.py   # a quick build

Environment variables (each maps to the notebooks' parameter of the same name in lower case): DATA, MODEL,
CHECKPOINT, MASK_OUTPUT, STRUCTURE, SPLIT_FILE, MAX_IMAGES, EPOCHS, STEPS, LR, SEED, DEVICE, OUT, PHANTOM_N,
PHANTOM_SIZE, HEATMAP_IMAGES; the results chapter's SEEDS and COMPARE_IMAGES; the LiteMedSAM chapter's own
BOX_IMAGES, BOX_EPOCHS, BOX_SEEDS, BOX_STRUCTURES, BOX_EXTRA_JITTERS, BOX_COMPARE_IMAGES (lists: space- or
comma-separated); SAMPOT_THREADS sets torch's threads in the notebooks,
SAMPOT_EMBEDDINGS the folder of stored image embeddings (default _build/embeddings). BOOK_LANES=1 runs every
chapter one after another; by default (2 lanes) the LiteMedSAM chapter runs beside the others, each kernel with
half the cores' threads (SAMPOT_THREADS, if set, wins), and its log goes to _build/logs/. SAMPOT_REPO_URL, the public
repository's address (https://github.com/OWNER/NAME, or on gitlab.com or bitbucket.org), adds the repository button
and the Binder and Colab launch buttons; unset, the book has none (never a button that leads nowhere).

The executed notebooks are written next to their MyST sources as ``notebooks/<name>.ipynb`` (not committed); the
book shows them and the launch buttons open them. A failing notebook stops the build with the notebook and the cell
named, and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = [
    "02_prompt_sensitivity",
    "03_learning_to_score",
    "04_prompt_evolution",
    "05_results",
    "06_try_it",
    "07_litemedsam",
    "08_new_data",
    "09_full_size",
]
#: Chapters that run one after another; the lanes run side by side (02-06 and 08 share the run folder _build/run; the
#: LiteMedSAM chapter has its own model and folders). On a 2-core machine two 1-thread kernels do more work per
#: minute than one 2-thread kernel (a step is only 1.3 to 1.55 times faster on 2 threads: bench_evolution.py).
LANES = [[n for n in NOTEBOOKS if n not in ("07_litemedsam", "09_full_size")], ["07_litemedsam", "09_full_size"]]
PHANTOM_DIR = ROOT / "_build" / "data" / "phantom"
STATIC_DIR = ROOT / "_build" / "static"
# env var -> (parameter, type); the same parameters are declared in every notebook's parameters cell.
COMMON = {
    "MODEL": ("model", str),
    "CHECKPOINT": ("checkpoint", str),
    "MASK_OUTPUT": ("mask_output", str),
    "DATA": ("data", str),
    "STRUCTURE": ("structure", str),
    "SPLIT_FILE": ("split_file", str),
    "MAX_IMAGES": ("max_images", int),
    "EPOCHS": ("epochs", int),
    "STEPS": ("steps", int),
    "LR": ("lr", float),
    "SEED": ("seed", int),
    "DEVICE": ("device", str),
    "OUT": ("out", str),
    "PHANTOM_N": ("phantom_n", int),
    "PHANTOM_SIZE": ("phantom_size", int),
}
ONLY = {
    "HEATMAP_IMAGES": ("02_prompt_sensitivity", "heatmap_images", int),
    # The results chapter: the seeds of its spread table, and its optimiser comparison's test images
    "SEEDS": ("05_results", "seeds", lambda v: [int(x) for x in v.replace(",", " ").split()]),
    "COMPARE_IMAGES": ("05_results", "compare_images", int),
    # The LiteMedSAM chapter: its own sizes (it runs three structures and several scores, so CI gives it fewer images)
    "BOX_IMAGES": ("07_litemedsam", "max_images", int),
    "BOX_EPOCHS": ("07_litemedsam", "epochs", int),
    "BOX_SEEDS": ("07_litemedsam", "seeds", lambda v: [int(x) for x in v.replace(",", " ").split()]),
    "BOX_STRUCTURES": ("07_litemedsam", "structures", lambda v: v.replace(",", " ").split()),
    "BOX_EXTRA_JITTERS": ("07_litemedsam", "extra_jitters", lambda v: [float(x) for x in v.replace(",", " ").split()]),
    "BOX_COMPARE_IMAGES": ("07_litemedsam", "compare_images", int),
}
#: The offline build's own defaults (no DATA: phantoms), where a notebook's default would take it past 20 minutes on
#: 2 cores: the results chapter's spread over seeds repeats the whole run per seed, so it runs one seed here; set
#: SEEDS to run more (CI's JSRT build runs three).
OFFLINE_DEFAULTS = {"05_results": {"seeds": [0]}}
#: Common parameters a chapter does not take: the LiteMedSAM chapter has its own model, structures, folder and lr.
NOT_FOR = {
    "07_litemedsam": {"model", "checkpoint", "mask_output", "structure", "out", "lr", "seed", "max_images", "epochs"},
    # the full-size chapter reads the committed results: only the data set (for its gallery) and the device apply
    "09_full_size": {name for name, _ in COMMON.values()} - {"data", "device"},
}
#: The one setting for the repository's address: the repository and launch buttons exist only when it is set.
REPO_ENV = "SAMPOT_REPO_URL"
REPO_HOSTS = ("github.com", "gitlab.com", "bitbucket.org")  # the hosts sphinx-book-theme builds launch links for
LAUNCH_BUTTONS = {
    "notebook_interface": "jupyterlab",
    "binderhub_url": "https://mybinder.org",
    "colab_url": "https://colab.research.google.com",
}


def _mask_output(value: str) -> Any:
    return int(value) if value.isdigit() else value


def _convert(var: str, value: str, kind: Any) -> Any:
    """``kind(value)``; a value that is not of that kind stops the build with one line naming the variable."""
    try:
        return kind(value)
    except ValueError:
        what = {int: "a whole number", float: "a number"}.get(kind, "numbers separated by spaces or commas")
        raise SystemExit(f"{var}={value!r}: must be {what}; set it so, or unset it for the default.") from None


def parameters_from_env(env: dict[str, str]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(parameters for every notebook, {notebook: its own extra parameters}) from the environment; a value that is
    not of its variable's kind raises SystemExit naming the variable."""
    common: dict[str, Any] = {}
    for var, (name, kind) in COMMON.items():
        if env.get(var):
            common[name] = _mask_output(env[var]) if var == "MASK_OUTPUT" else _convert(var, env[var], kind)
    own: dict[str, dict[str, Any]] = {}
    for var, (nb, name, kind) in ONLY.items():
        if env.get(var):
            own.setdefault(nb, {})[name] = _convert(var, env[var], kind)
    return common, own


def check_parameters(common: dict[str, Any]) -> None:
    """A value no chapter can use stops the build before anything is deleted or started, with one line naming its
    variable: the checks the notebooks make (the experiment's config among them) run here first, on the same values."""
    from sampot_lib import errors
    from sampot_lib.defaults import MAX_PHANTOM_SIZE, MIN_PHANTOM_SIZE
    from sampot_lib.experiment.config import ExperimentConfig
    from sampot_lib.models.registry import model_names

    var = {name: v for v, (name, _) in COMMON.items()}

    def refuse(name: str, message: str) -> None:
        raise SystemExit(f"{var[name]}={os.environ.get(var[name], common[name])!r}: {message}")

    for name, low, high in (("phantom_n", 1, None), ("phantom_size", MIN_PHANTOM_SIZE, MAX_PHANTOM_SIZE)):
        try:
            if name in common:
                errors.whole(common[name], "it", low=low, high=high)
        except errors.SampotError as exc:
            refuse(name, str(exc))
    if "model" in common and common["model"] not in model_names():
        refuse("model", f"no such model; known: {', '.join(model_names())}.")
    for name, what in (("data", "a folder-format data set (images/ and masks/<structure>/)"),
                       ("checkpoint", "a checkpoint file"), ("split_file", "a split file")):  # fmt: skip
        if name in common and not Path(common[name]).exists():
            refuse(name, f"no such file or folder; give {what}.")
    if "data" in common and not (Path(common["data"]) / "images").is_dir():
        refuse("data", "no images/ folder there; give a folder-format data set (images/ and masks/<structure>/).")
    config = {k: v for k, v in common.items() if k not in ("phantom_n", "phantom_size")}
    try:
        ExperimentConfig(**({"data": ".", "out": "_build/run"} | config))
    except errors.SampotError as exc:
        named = [k for k in config if f"'{k}'" in str(exc)]
        if not named:
            raise SystemExit(str(exc)) from None
        refuse(named[0], str(exc))


def check_chapter_parameters(common: dict[str, Any], own: dict[str, dict[str, Any]]) -> None:
    """The chapters' own values (ONLY) checked as :func:`check_parameters` checks the common ones, before any chapter
    starts: a value one chapter cannot use would otherwise fail that chapter while the others run to their end."""
    from sampot_lib import errors
    from sampot_lib.data.phantom_shapes import STRUCTURES
    from sampot_lib.experiment.config import ExperimentConfig

    var = {(nb, name): v for v, (nb, name, _) in ONLY.items()}

    def refuse(nb: str, name: str, message: str) -> None:
        raise SystemExit(f"{var[nb, name]}={os.environ.get(var[nb, name], own[nb][name])!r}: {message}")

    for nb, name, low in (("02_prompt_sensitivity", "heatmap_images", 1), ("05_results", "compare_images", 0),
                          ("07_litemedsam", "compare_images", 0)):  # fmt: skip
        if name in own.get(nb, {}):
            try:
                errors.whole(own[nb][name], "it", low=low)
            except errors.SampotError as exc:
                refuse(nb, name, str(exc))
    settings = {"05_results": {}, "07_litemedsam": {"prompt": "box", "model": "litemedsam"}}
    for nb, fixed in settings.items():
        given = {k: v for k, v in own.get(nb, {}).items() if k in ("seeds", "max_images", "epochs", "extra_jitters")}
        for name, value in given.items():  # each alone, so that the message names its variable
            try:
                ExperimentConfig(**{"data": ".", "out": "_build/run", **fixed, name: value})
            except errors.SampotError as exc:
                refuse(nb, name, str(exc))
            if name == "seeds" and not value:
                refuse(nb, name, "give at least one seed.")
    structures = own.get("07_litemedsam", {}).get("structures")
    if structures is not None:
        data = common.get("data")
        masks = Path(data) / "masks" if data else None
        have = sorted(p.name for p in masks.iterdir() if p.is_dir()) if masks and masks.is_dir() else list(STRUCTURES)
        if not structures or structures[0] not in have:
            refuse("07_litemedsam", "structures", f"its first structure must be one the data set has: "
                                                   f"{', '.join(have)}.")  # fmt: skip


def ensure_phantoms(n: int, size: int, seed: int) -> Path:
    """The default data set: ``n`` phantoms of ``size`` px at _build/data/phantom, rewritten if it differs."""
    from PIL import Image

    from sampot_lib.data.phantom import write_phantom_set

    stamp = PHANTOM_DIR / "build_params.json"
    wanted = {"n": n, "size": size, "seed": seed}
    if stamp.is_file() and json.loads(stamp.read_text()) == wanted and (PHANTOM_DIR / "manifest.csv").is_file():
        print(f"phantom set: reusing {PHANTOM_DIR} ({n} images, {size} px)")
        return PHANTOM_DIR
    shutil.rmtree(PHANTOM_DIR, ignore_errors=True)
    print(f"phantom set: writing {n} phantoms of {size} px to {PHANTOM_DIR}", flush=True)
    write_phantom_set(PHANTOM_DIR, n, seed, size=size, progress=True)
    first = next((PHANTOM_DIR / "images").iterdir())
    assert Image.open(first).size == (size, size)
    stamp.write_text(json.dumps(wanted))
    return PHANTOM_DIR


def book_config(env: dict[str, str], out: Path | None = None) -> Path:
    """_config.yml as the build uses it, written to ``out`` (default _build/_config.yml): with the repository and
    launch buttons when $SAMPOT_REPO_URL is set (checked: SystemExit naming what is wrong), without them when not."""
    import re

    import yaml

    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    url = env.get(REPO_ENV, "").strip().rstrip("/")
    html = config.setdefault("html", {})
    repository = config.setdefault("repository", {})
    if url:
        hosts = "|".join(re.escape(h) for h in REPO_HOSTS)
        if not re.fullmatch(rf"https://(www\.)?({hosts})/[\w.-]+/[\w.-]+", url):
            raise SystemExit(
                f"{REPO_ENV}={url!r} is not a repository address like https://github.com/OWNER/NAME (hosts: "
                f"{', '.join(REPO_HOSTS)}); fix it, or unset it to build without launch buttons."
            )
        repository["url"] = url
        config["launch_buttons"] = dict(LAUNCH_BUTTONS)
        html["use_repository_button"] = True
    else:
        repository.pop("url", None)
        config.pop("launch_buttons", None)
        for button in ("use_repository_button", "use_issues_button", "use_edit_page_button"):
            html[button] = False
    # The written config lives in _build/: paths in it must not depend on where it lies.
    sphinx = config.setdefault("sphinx", {})
    for name, path in (sphinx.get("local_extensions") or {}).items():
        sphinx["local_extensions"][name] = str(ROOT / path)
    static = sphinx.setdefault("config", {}).get("html_static_path")
    if static:
        sphinx["config"]["html_static_path"] = [str(ROOT / p) for p in static]
    out = out or ROOT / "_build" / "_config.yml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("# Written by scripts/build_book.py from _config.yml; edit that one.\n" + yaml.safe_dump(config))
    return out


def copy_static() -> None:
    """plotly.js for the site itself (served from _static: no CDN, works offline)."""
    import plotly

    STATIC_DIR.mkdir(parents=True, exist_ok=True)
    src = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    shutil.copyfile(src, STATIC_DIR / "plotly.min.js")


def run_notebook(name: str, params: dict[str, Any], env: dict[str, str]) -> Path:
    """Execute notebooks/<name>.md with papermill into notebooks/<name>.ipynb; SystemExit naming the failing cell."""
    import jupytext
    import papermill
    from papermill.exceptions import PapermillExecutionError

    src = ROOT / "notebooks" / f"{name}.md"
    dest = src.with_suffix(".ipynb")
    tmp = dest.with_name(f".running.{dest.name}")
    nb = jupytext.read(src)
    os.environ.update(env)  # the kernel inherits the environment of this process
    t0 = time.time()
    print(f"\n=== {name}: running with {params}", flush=True)
    try:
        papermill.execute_notebook(
            nb, str(tmp), parameters=params, cwd=str(ROOT / "notebooks"), progress_bar=True, kernel_name="python3",
            log_output=False,
        )  # fmt: skip
    except PapermillExecutionError as exc:
        failed = _failed_cell(tmp)
        where = f"cell {exc.cell_index}" + (f" (execution count {exc.exec_count})" if exc.exec_count else "")
        print(f"\nBUILD FAILED: notebook notebooks/{name}.md, {where}: {exc.ename}: {exc.evalue}", file=sys.stderr)
        if failed:
            print("--- failing cell source ---\n" + failed + "\n---", file=sys.stderr)
        print(f"the partly executed notebook is at {tmp}", file=sys.stderr)
        raise SystemExit(1) from None
    _strip_widget_state(tmp)
    os.replace(tmp, dest)
    print(f"=== {name}: done in {time.time() - t0:.0f} s", flush=True)
    return dest


def plan_lanes(todo: list[str], n_lanes: int) -> list[list[str]]:
    """The chapters of ``todo`` in lanes that run side by side (each in book order); one lane when ``n_lanes`` is 1
    or only one lane has work."""
    lanes = [[n for n in lane if n in todo] for lane in LANES] if n_lanes > 1 else []
    lanes = [lane for lane in lanes if lane]
    return lanes if len(lanes) > 1 else [[n for n in NOTEBOOKS if n in todo]]


def _start_lane(names: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, Path]:
    """Run ``names`` one after another in a child build (notebooks only) beside this one; its output goes to
    _build/logs/lane_<first>.log."""
    log = ROOT / "_build" / "logs" / f"lane_{names[0]}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--notebooks-only", "--only", *names]
    print(f"=== {', '.join(names)}: running beside the other chapters ({env.get('SAMPOT_THREADS')} torch threads "
          f"each); log: {log.relative_to(ROOT)}", flush=True)  # fmt: skip
    with log.open("w") as fh:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT), log


def _lane_summary(log: Path) -> str:
    """The '=== name: done in N s' lines of a side lane's log."""
    return "\n".join(line for line in log.read_text(errors="replace").splitlines() if line.startswith("=== "))


def _failed_cell(path: Path) -> str:
    """Source of the first code cell with an error output in a papermill output notebook."""
    try:
        nb = json.loads(path.read_text())
    except (OSError, ValueError):
        return ""
    for cell in nb.get("cells", []):
        if any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
            return "".join(cell.get("source", ""))
    return ""


def _strip_widget_state(path: Path) -> None:
    """Drop ipywidgets from an executed notebook: myst-nb would load the widget manager from a CDN for their saved
    state, and a static page cannot run their Python callbacks anyway. Widget outputs go too: their text form is the
    widget's state when it was created (a tqdm bar in a kernel is a widget, and its text would read 0%)."""
    nb = json.loads(path.read_text())
    nb.get("metadata", {}).pop("widgets", None)
    for cell in nb.get("cells", []):
        outputs = []
        for out in cell.get("outputs", []):
            data = out.get("data")
            if data is not None and "application/vnd.jupyter.widget-view+json" in data:
                continue
            outputs.append(out)
        if "outputs" in cell:
            cell["outputs"] = outputs
    path.write_text(json.dumps(nb, indent=1))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="*", choices=NOTEBOOKS, help="run only these notebooks (others keep their .ipynb)")
    p.add_argument("--skip-notebooks", action="store_true", help="only run jupyter-book on the existing .ipynb")
    p.add_argument("--notebooks-only", action="store_true", help="run the notebooks, not jupyter-book (a lane)")
    args = p.parse_args(argv)
    t_start = time.time()
    env = dict(os.environ)
    config = book_config(env) if not args.notebooks_only else None  # a bad address stops the build before any work
    n_lanes = (env.get("BOOK_LANES") or "2").strip()
    if n_lanes not in ("1", "2"):
        raise SystemExit(f"BOOK_LANES={n_lanes!r}: use 1 (every chapter in turn) or 2 (the LiteMedSAM chapter beside "
                         "the others).")  # fmt: skip
    common, own = parameters_from_env(env)
    check_parameters(common)
    check_chapter_parameters(common, own)
    if "data" not in common:
        for name, params in OFFLINE_DEFAULTS.items():
            own[name] = {**params, **own.get(name, {})}
    if "data" not in common and not args.skip_notebooks:
        ensure_phantoms(common.get("phantom_n", 60), common.get("phantom_size", 512), common.get("seed", 0))
    child_env = {"SAMPOT_BOOK_HTML": "1", "PYTHONPATH": str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")}
    # Every chapter's kernel reads image embeddings from one store: each image is encoded once per model.
    child_env["SAMPOT_EMBEDDINGS"] = env.get("SAMPOT_EMBEDDINGS") or str(ROOT / "_build" / "embeddings")
    if not args.skip_notebooks:
        todo = args.only if args.only else NOTEBOOKS
        if not args.only:
            for name in NOTEBOOKS:  # no stale chapter from an earlier build may reach the site
                (ROOT / "notebooks" / f"{name}.ipynb").unlink(missing_ok=True)
        lanes = plan_lanes(todo, 1 if args.notebooks_only else int(n_lanes))
        if not env.get("SAMPOT_THREADS"):  # each kernel its own share of the cores
            child_env["SAMPOT_THREADS"] = str(max(1, (os.cpu_count() or 1) // len(lanes)))
        side = [_start_lane(lane, {**env, **child_env}) for lane in lanes[1:]]
        try:
            for name in lanes[0]:
                shared = {k: v for k, v in common.items() if k not in NOT_FOR.get(name, set())}
                run_notebook(name, {**shared, **own.get(name, {})}, child_env)
        except BaseException:  # a failed chapter or Ctrl-C: no lane may go on working alone
            for proc, _ in side:
                proc.terminate()
            raise
        for proc, log in side:
            if proc.wait() != 0:
                print(log.read_text(errors="replace")[-6000:], file=sys.stderr)
                print(f"BUILD FAILED: a side lane of notebooks failed; its log: {log}", file=sys.stderr)
                return 1
            print(f"\n{_lane_summary(log)}", flush=True)
    if args.notebooks_only:
        return 0
    copy_static()
    t_nb = time.time()
    figures = ROOT / "book" / "scripts" / "phantom_vs_real.py"
    if figures.is_file():  # the data page's figure (real X-rays are read at build time, never committed)
        print(f"\n=== {figures.relative_to(ROOT)}", flush=True)
        if subprocess.run([sys.executable, str(figures)], cwd=ROOT, env={**os.environ, **child_env}).returncode:
            print(f"BUILD FAILED: {figures.relative_to(ROOT)} failed", file=sys.stderr)
            return 1
    print("\n=== jupyter-book build", flush=True)
    jb = Path(sys.executable).parent / "jupyter-book"
    cmd = [str(jb) if jb.exists() else "jupyter-book", "build", str(ROOT), "--config", str(config)]
    proc = subprocess.run(cmd, cwd=ROOT)
    if proc.returncode != 0:
        print(f"BUILD FAILED: jupyter-book build exited {proc.returncode}", file=sys.stderr)
        return 1
    t_end = time.time()
    print(f"\nbook built: {ROOT / '_build' / 'html' / 'index.html'}")
    print(f"time: notebooks {t_nb - t_start:.0f} s, jupyter-book {t_end - t_nb:.0f} s, total {t_end - t_start:.0f} s")
    table = Path(common.get("out", "_build/run"))
    table = (table if table.is_absolute() else ROOT / table) / "results_table.md"
    if table.is_file():
        print("\nresults table as the book shows it:\n" + table.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
