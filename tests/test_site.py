"""The built site: every chapter page has its Colab, repository and issues buttons.

The site is built without executing the notebooks (a copy of ``_config.yml`` with execution
off), so this stays cheap; ``make book`` builds the executed site the same way.
"""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
CHAPTERS = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    if shutil.which("jupyter-book", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("jupyter-book is not installed (pip install .[book])")
    out = tmp_path_factory.mktemp("site")
    config = dict(CONFIG, execute=dict(CONFIG["execute"], execute_notebooks="off"))
    (out / "_config.yml").write_text(yaml.safe_dump(config))
    # a results file, as a chapter executed by this build would have written it
    (out / "cache" / "results").mkdir(parents=True)
    (out / "cache" / "results" / "05_wise_ft-mini-seed0.json").write_text(json.dumps(
        {"chapter": "05_wise_ft", "profile": "mini", "seed": 0,
         "claims": {"a mixture beats both ends": {"diff": 0.031, "margin": 0.008}}}))
    cmd = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(ROOT), "--config", str(out / "_config.yml"),
           "--path-output", str(out), "--quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "CLIPNOTES_CACHE": str(out / "cache")})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out / "_build" / "html"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_page_opens_its_own_notebook_in_colab(site, chapter):
    html = (site / "notebooks" / f"{chapter}.html").read_text()
    repo = CONFIG["repository"]["url"].removeprefix("https://github.com/")
    branch = CONFIG["repository"]["branch"]
    colab = f"https://colab.research.google.com/github/{repo}/blob/{branch}/notebooks/{chapter}.ipynb"
    assert colab in html, f"no Colab button for {chapter}"
    assert re.search(rf'href="{re.escape(CONFIG["repository"]["url"])}"', html), "no repository button"
    assert f'{CONFIG["repository"]["url"]}/issues/new' in html, "no issues button"


def test_make_books_results_page_shows_the_results_files_of_its_cache(site):
    """`make book` executes the chapters; clipnotes.sphinxext fills the results page from what they wrote."""
    text = re.sub(r"<[^>]+>", " ", (site / "book" / "results.html").read_text())
    assert "a mixture beats both ends" in text and "+3.1 ± 0.8" in text
    assert "fine-tuned vs zero-shot, mean of 5 shifts" in text          # the paper's numbers, from chapter 5's box


def test_site_sources_come_from_the_executed_notebooks(tmp_path):
    """`make test` builds the site from nbval's execution: execution off, the executed copies,
    the run-times page written from the execution's times."""
    import json

    from clipnotes.book import assemble_site
    from clipnotes.utils import ClipnotesError
    executed = tmp_path / "executed"
    with pytest.raises(ClipnotesError, match="run `make nbval` first"):
        assemble_site(executed, tmp_path / "src", ROOT)
    (executed / "notebooks").mkdir(parents=True)
    for name in CHAPTERS:
        shutil.copy(ROOT / "notebooks" / f"{name}.ipynb", executed / "notebooks")
    (executed / "notebooks" / f"{CHAPTERS[0]}.ipynb").write_text('{"marker": 1}')
    (executed / "times.json").write_text(json.dumps({c: {"seconds": 12.3, "seed": "0"} for c in CHAPTERS}))
    src = assemble_site(executed, tmp_path / "src", ROOT)
    config = yaml.safe_load((src / "_config.yml").read_text())
    assert config["execute"]["execute_notebooks"] == "off" and config["repository"] == CONFIG["repository"]
    assert json.loads((src / "notebooks" / f"{CHAPTERS[0]}.ipynb").read_text()) == {"marker": 1}
    page = (src / "book" / "runtimes.md").read_text()
    assert "nb-exec-table" not in page and f"| {CHAPTERS[-1]} | 12 |  | 0 |  |" in page


def test_times_table_shows_cold_warm_and_the_slowest_cell():
    from clipnotes.book import times_table
    cold = {"05_wise_ft": {"seconds": 226.4, "cache": "cold", "seed": "0",
                           "slowest_cells": [{"code_cell": 6, "seconds": 180.2, "starts": "run = ..."}]}}
    table = times_table(cold, {"05_wise_ft": {"seconds": 35.0}})
    assert table.splitlines()[2] == "| 05_wise_ft | 226 | cold | 0 | 180 s, code cell 6 | 35 |"


def test_results_page_reads_the_claims_of_every_seed(tmp_path):
    """The results page: one table per chapter, one column per seed whose results file exists."""
    import dataclasses
    import json

    from clipnotes.book import (RESULTS_MARK, assemble_site, chapter_title, published_numbers, results_tables,
                                save_results)
    from clipnotes.profiles import get_profile
    from clipnotes.stats import Gap
    assert "No results files" in results_tables(tmp_path)
    for seed, diff in ((0, 0.031), (3, 0.012)):
        prof = dataclasses.replace(get_profile("mini", seed=seed), cache_dir=tmp_path)
        save_results(prof, "05_wise_ft", {"other": 1}, claims={"a mixture beats both ends": Gap(diff, 0.004)})
    table = results_tables(tmp_path / "results")
    assert "| claim | seed 0 | seed 3 | range (mini) |" in table
    assert "| a mixture beats both ends | +3.1 ± 0.8 | +1.2 ± 0.8 | +1.2 … +3.1 |" in table
    # a GPU run of the chapter in paper saves its claims beside them: a column of its own, not in the range
    paper = dataclasses.replace(get_profile("mini", seed=0), name="paper", cache_dir=tmp_path)
    save_results(paper, "05_wise_ft", {}, claims={"a mixture beats both ends": Gap(0.052, 0.003)})
    table = results_tables(tmp_path / "results")
    assert "| claim | seed 0 | seed 3 | paper, seed 0 | range (mini) |" in table
    assert "| a mixture beats both ends | +3.1 ± 0.8 | +1.2 ± 0.8 | +5.2 ± 0.6 | +1.2 … +3.1 |" in table
    assert RESULTS_MARK in (ROOT / "book" / "results.md").read_text()
    executed = tmp_path / "executed"
    (executed / "notebooks").mkdir(parents=True)
    for name in CHAPTERS:
        shutil.copy(ROOT / "notebooks" / f"{name}.ipynb", executed / "notebooks")
    (executed / "times.json").write_text(json.dumps({c: {"seconds": 1.0, "seed": "0"} for c in CHAPTERS}))
    src = assemble_site(executed, tmp_path / "src", ROOT, results_dir=tmp_path / "results")
    page = (src / "book" / "results.md").read_text()
    assert "+3.1 ± 0.8" in page
    assert published_numbers(ROOT / "notebooks" / "05_wise_ft.ipynb") in page       # beside the paper's numbers
    assert "## " + chapter_title(ROOT / "notebooks" / "05_wise_ft.ipynb") in page


def test_results_page_shows_reported_differences_apart_and_pooled_over_seeds(tmp_path):
    """A difference a chapter reports but does not assert is marked so, and pooled over the seeds:
    the mean of the runs' differences, their margins combined in quadrature over their number."""
    import dataclasses

    from clipnotes.book import results_tables, save_results
    from clipnotes.profiles import get_profile
    from clipnotes.stats import Gap
    for seed, diff in ((0, 0.021), (1, 0.011)):
        prof = dataclasses.replace(get_profile("mini", seed=seed), cache_dir=tmp_path)
        save_results(prof, "12_tpt", {}, claims={"a claim": Gap(0.3, 0.02)},
                     reported={"a small gain": Gap(diff, 0.006)})       # margins 1.2 points each
    table = results_tables(tmp_path / "results")
    assert "| a claim | +30.0 ± 4.0 | +30.0 ± 4.0 | +30.0 … +30.0 |" in table
    assert ("| a small gain *(reported, not asserted)* | +2.1 ± 1.2 | +1.1 ± 1.2 | +1.1 … +2.1; "
            "pooled +1.6 ± 0.8 |") in table
    # a newer paper run that makes fewer claims does not hide the mini runs' other rows
    paper = dataclasses.replace(get_profile("mini", seed=0), name="paper", cache_dir=tmp_path)
    save_results(paper, "12_tpt", {}, claims={"a claim": Gap(0.1, 0.02)})
    table = results_tables(tmp_path / "results")
    assert "| a claim | +30.0 ± 4.0 | +30.0 ± 4.0 | +10.0 ± 4.0 | +30.0 … +30.0 |" in table
    assert "| a small gain *(reported, not asserted)* | +2.1 ± 1.2 | +1.1 ± 1.2 |  | +1.1 … +2.1; pooled" in table


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_results_page_quotes_each_chapters_published_numbers(chapter):
    """The paper's column of the chapter's "Paper vs ours" box, without our glued column
    (another page cannot show a chapter's glued numbers)."""
    from clipnotes.book import published_numbers
    text = published_numbers(ROOT / "notebooks" / f"{chapter}.ipynb")
    assert text is not None and "| --- |" in text, f"{chapter} has no Paper vs ours table"
    assert "{glue" not in text and "tiny CLIP" not in text


def test_published_numbers_drop_only_our_column(tmp_path):
    from clipnotes.book import published_numbers
    box = ":::{admonition} Paper vs ours\n:class: note\nSource line.\n\n| | paper | tiny CLIP here |\n" \
          "| --- | --- | --- |\n| gain | +4.2 | {glue:text}`gap` |\n\nProse after.\n:::"
    nb = tmp_path / "x.ipynb"
    nb.write_text(json.dumps({"cells": [{"cell_type": "markdown", "source": box}]}))
    assert published_numbers(nb) == "Source line.\n\n|  | paper |\n| --- | --- |\n| gain | +4.2 |"
    nb.write_text(json.dumps({"cells": [{"cell_type": "markdown", "source": box.replace("tiny CLIP here", "ours")}]}))
    with pytest.raises(Exception, match="glued number"):
        published_numbers(nb)
    nb.write_text(json.dumps({"cells": [{"cell_type": "markdown", "source": "# Title\nno box"}]}))
    assert published_numbers(nb) is None


def _heading_levels(markdown: str) -> list[int]:
    return [len(m.group(1)) for m in re.finditer(r"^(#+) ", markdown, flags=re.M)]


def test_results_page_headings_do_not_skip_a_level(tmp_path):
    """The strict build fails on an H1 followed by an H3 (myst.header): the tables' chapter
    headings sit one level below the page title."""
    import dataclasses

    from clipnotes.book import RESULTS_MARK, chapter_title, results_tables, save_results
    from clipnotes.profiles import get_profile
    from clipnotes.stats import Gap
    prof = dataclasses.replace(get_profile("mini", seed=0), cache_dir=tmp_path)
    for chapter in ("03_prompts", "05_wise_ft", "09_lp_ft"):
        save_results(prof, chapter, {}, claims={"a claim": Gap(0.02, 0.01)})
    page = (ROOT / "book" / "results.md").read_text().replace(RESULTS_MARK, results_tables(tmp_path / "results",
                                                                                      ROOT / "notebooks"))
    # each section titled as its chapter, found by number (chapter 3 saves its results as "03_prompts")
    for notebook in ("03_prompt_engineering", "05_wise_ft", "09_lp_ft"):
        assert "## " + chapter_title(ROOT / "notebooks" / f"{notebook}.ipynb") in page
    levels = _heading_levels(page)
    assert levels[0] == 1 and all(b - a <= 1 for a, b in zip(levels, levels[1:])), levels


def test_bibliography_keys_are_unique_and_every_citation_resolves():
    """A repeated entry or a cited key missing from references.bib is a warning, so an error, in the strict build."""
    bib = (ROOT / "book" / "references.bib").read_text()
    keys = re.findall(r"^@\w+\{([^,\s]+),", bib, flags=re.M)
    assert len(keys) == len(set(keys)), sorted(k for k in keys if keys.count(k) > 1)
    sources = [p.read_text() for p in (ROOT / "book").glob("*.md")] + \
              [p.read_text() for p in (ROOT / "notebooks").glob("*.ipynb")]
    cited = {k.strip() for s in sources for group in re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", s)
             for k in group.split(",")}
    assert cited and cited <= set(keys), sorted(cited - set(keys))


def test_results_figure_puts_every_method_on_chapter_5s_plane(tmp_path):
    from clipnotes.book import method_plane, results_figure
    assert results_figure(tmp_path) == ""                    # no chapter 5 yet: no figure
    save = lambda name, record: (tmp_path / f"{name}-mini-seed0.json").write_text(json.dumps(record))
    save("05_wise_ft", {"sweep": {"alpha": [0.0, 0.5, 1.0], "ID": [0.8, 0.9, 0.95], "OOD mean": [0.7, 0.75, 0.72]}})
    save("07_car_ft", {"table": {"ID": {"CE fine-tuned": 0.95, "CAR-FT": 0.96},
                                 "OOD mean": {"CE fine-tuned": 0.72, "CAR-FT": 0.74}}})
    sweep, points = method_plane(tmp_path)
    assert list(sweep.index) == [0.0, 0.5, 1.0] and points == {"CAR-FT (ch. 7)": (0.96, 0.74)}
    assert "](data:image/png;base64," in results_figure(tmp_path)


def test_plane_points_say_which_chapters_have_not_run(tmp_path, capsys):
    """Chapter 10's plane reads the earlier chapters' results files, and says which are missing."""
    from clipnotes.book import plane_points
    (tmp_path / "07_car_ft-mini-seed2.json").write_text(json.dumps(
        {"table": {"ID": {"CAR-FT": 0.96, "other": 0.5}, "OOD mean": {"CAR-FT": 0.74, "other": 0.4}}}))
    rows = {"06_flyp": ["FLYP"], "07_car_ft": ["CAR-FT", "not a row"]}
    assert plane_points(rows, tmp_path, seed=2, say_missing=True) == {"CAR-FT (ch. 7)": (0.96, 0.74)}
    assert capsys.readouterr().out.strip() == "chapter 6 has not run in mini with seed 2: its points are left out"
    assert plane_points(rows, tmp_path, seed=0) == {} and capsys.readouterr().out == ""


def test_a_profiles_results_files_live_in_one_folder(tmp_path, monkeypatch):
    """save_results writes where results_dir says, the folder chapter 10's plane reads."""
    from clipnotes import book
    from clipnotes.profiles import get_profile
    monkeypatch.setenv("CLIPNOTES_CACHE", str(tmp_path))
    profile = get_profile("mini", seed=3)
    path = book.save_results(profile, "07_car_ft", {"table": {"ID": {"CAR-FT": 0.9}, "OOD mean": {"CAR-FT": 0.7}}})
    assert path.parent == book.results_dir(profile) == tmp_path / "results"
    assert book.plane_points({"07_car_ft": ["CAR-FT"]}, book.results_dir(profile), seed=3) == {"CAR-FT (ch. 7)": (0.9, 0.7)}


def test_results_page_leaves_out_claims_an_older_version_of_a_chapter_made(tmp_path):
    """Seed 3's file is from before a claim moved to another chapter: the page shows the newest
    run's claims only (seed 3's cell of a kept claim stays)."""
    import dataclasses
    import os

    from clipnotes.book import results_tables, save_results
    from clipnotes.profiles import get_profile
    from clipnotes.stats import Gap
    old = save_results(dataclasses.replace(get_profile("mini", seed=3), cache_dir=tmp_path), "10_model_soups", {},
                       claims={"soup beats ingredients": Gap(0.01, 0.003), "PAINT size gain": Gap(0.1, 0.02)})
    os.utime(old, (1, 1))
    save_results(dataclasses.replace(get_profile("mini", seed=0), cache_dir=tmp_path), "10_model_soups", {},
                 claims={"soup beats ingredients": Gap(0.008, 0.003)})
    table = results_tables(tmp_path / "results")
    assert "| soup beats ingredients | +0.8 ± 0.6 | +1.0 ± 0.6 | +0.8 … +1.0 |" in table
    assert "PAINT" not in table
