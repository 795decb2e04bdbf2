"""Open every page of the built book in headless Chromium with the network off.

Fails on any console error, uncaught exception or request that leaves the site, and checks that every plotly figure
drew (a non-empty SVG), that the heat-map shows the Dice on hover and that the trajectory's step slider moves the
click. Screenshots of the chapter pages go to <site>/../screenshots/ (a CI artefact).
"""

from __future__ import annotations

from pathlib import Path

import pytest

# Figures each chapter must show (the build can drop a figure without any error: this catches it).
MIN_FIGURES = {
    "notebooks/02_prompt_sensitivity.html": 1,
    "notebooks/03_learning_to_score.html": 5,
    "notebooks/04_prompt_evolution.html": 2,
    "notebooks/05_results.html": 1,
    "notebooks/06_try_it.html": 1,
}

_FIGURES_DRAWN = """() => Array.from(document.querySelectorAll('.plotly-graph-div')).map(gd => {
    const svg = gd.querySelector('svg.main-svg');
    return {id: gd.id, drawn: !!svg && svg.querySelectorAll('path, image').length > 0,
            traces: (gd.data || []).length};
})"""


def _pages(site: Path) -> list[Path]:
    return sorted(p for p in site.rglob("*.html") if "_static" not in p.parts and "_sources" not in p.parts)


def _open(browser, page_path: Path):
    """A page opened offline; returns (page, problems) where problems collects console errors and escapes."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    problems: list[str] = []

    def route(r):
        if r.request.url.startswith(("file:", "data:", "blob:")):
            r.continue_()
        else:
            problems.append(f"request leaves the site: {r.request.url}")
            r.abort()

    context.route("**/*", route)
    context.set_offline(True)
    page = context.new_page()
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"uncaught: {e}"))
    page.goto(page_path.as_uri(), wait_until="load")
    page.wait_for_timeout(300)  # let deferred scripts run
    return page, problems


def test_every_page_loads_offline_and_every_figure_draws(site: Path, browser):
    pages = _pages(site)
    assert len(pages) >= 10, f"only {len(pages)} pages in {site}"
    shots = site.parent / "screenshots"
    shots.mkdir(exist_ok=True)
    failures = []
    for path in pages:
        rel = path.relative_to(site).as_posix()
        page, problems = _open(browser, path)
        figures = page.evaluate(_FIGURES_DRAWN)
        not_drawn = [f["id"] for f in figures if not f["drawn"]]
        if not_drawn:
            problems.append(f"{len(not_drawn)} of {len(figures)} plotly figures drew nothing")
        if len(figures) < MIN_FIGURES.get(rel, 0):
            problems.append(f"{len(figures)} plotly figures, expected at least {MIN_FIGURES[rel]}")
        if rel in MIN_FIGURES:
            page.screenshot(path=str(shots / (Path(rel).stem + ".png")), full_page=True)
        if problems:
            failures.append(f"{rel}:\n  " + "\n  ".join(problems))
        page.context.close()
    assert not failures, "\n".join(failures)
    assert (shots / "05_results.png").is_file()


def test_heatmap_hover_shows_dice(site: Path, browser):
    page, problems = _open(browser, site / "notebooks" / "02_prompt_sensitivity.html")
    gd = page.locator(".plotly-graph-div").first
    gd.scroll_into_view_if_needed()
    # The page position of one heat-map cell that holds a Dice (gd.data keeps plotly.py's base64 arrays;
    # calcdata has the numbers, and the axes map data to pixels).
    where = page.evaluate("""() => {
        const gd = document.querySelector('.plotly-graph-div');
        const k = gd.data.findIndex(t => t.type === 'heatmap');
        const cd = gd.calcdata[k][0], z = cd.z;
        const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, box = gd.getBoundingClientRect();
        for (let i = 0; i < z.length; i++) for (let j = 0; j < z[i].length; j++)
            if (typeof z[i][j] === 'number' && Number.isFinite(z[i][j])) {  // gaps are holes or NaN
                return {x: box.left + xa._offset + xa.l2p(cd.xCenter[j]),
                        y: box.top + ya._offset + ya.l2p(cd.yCenter[i]), dice: z[i][j]};
            }
        return null;
    }""")
    assert where is not None, "the heat-map has no cell with a Dice"
    page.mouse.move(where["x"], where["y"])
    page.wait_for_timeout(300)
    text = gd.locator(".hoverlayer").text_content() or ""
    assert "Dice" in text and f"{where['dice']:.3f}" in text, (text, where)
    assert not problems, problems
    page.context.close()


def test_trajectory_slider_moves_the_click(site: Path, browser):
    page, problems = _open(browser, site / "notebooks" / "04_prompt_evolution.html")
    gd = page.locator(".plotly-graph-div").first
    before = page.evaluate("() => document.querySelector('.plotly-graph-div').layout.title.text")
    n_steps = page.evaluate("() => document.querySelector('.plotly-graph-div').layout.sliders[0].steps.length")
    assert n_steps >= 2
    gd.scroll_into_view_if_needed()
    rail = gd.locator(".slider-rail-rect").first.bounding_box()
    page.mouse.click(rail["x"] + rail["width"] - 2, rail["y"] + rail["height"] / 2)
    page.wait_for_timeout(300)
    after = page.evaluate("() => document.querySelector('.plotly-graph-div').layout.title.text")
    assert before.split(":")[1].strip().startswith("step 0") and f"step {n_steps - 1}" in after, (before, after)
    assert not problems, problems
    page.context.close()


def test_equations_render_as_mathml(site: Path, browser):
    page, problems = _open(browser, site / "book" / "method.html")
    assert page.locator("math").count() >= 4
    assert "$$" not in page.inner_text("main")
    assert not problems, problems
    page.context.close()


@pytest.mark.parametrize("rel", ["notebooks/03_learning_to_score.html", "notebooks/05_results.html"])
def test_results_pages_name_model_and_data(site: Path, rel: str):
    html = (site / rel).read_text()
    assert "Model" in html or "model" in html
    assert "0.88" in html and "0.67" in html  # the paper's column is there to compare with
