"""The site researchers read (issue #31): method cards on the pages, controls and the oracle marked
with a legend on every plot, filters by task and kind, downloads of board.json and every metric as
CSV, links to the task and method docs, a submission page, a 390-px-wide phone layout (sticky first
column, nothing but the tables' own scrollers wider than the screen, no clipped plot labels), and
a first click that sorts best-first. Built from the tiny real run tests/test_publish.py makes
(tests/publish_fixtures.py); the browser tests run headless Chromium and skip when it is missing."""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import shutil
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from fexbench.core.results import read_result, read_results_dir
from fexbench.report.browser import PHONE, emulate_width, find_chromium
from fexbench.report.site import CSV_COLUMNS, publish
from publish_fixtures import make_run, write_raw as _write_raw

TASK = "waterbirds-spurious"
OTHER = "toy-task"  # a second task (not installed here: shown, not ranked), so the task filter has work to do
FORMULA = "=HYPERLINK(\"http://x\")"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, toy_method_registration) -> Path:
    return make_run(tmp_path_factory.mktemp("site-run"), toy_method_registration)


@pytest.fixture(scope="module")
def board(run_dir, tmp_path_factory) -> Path:
    """The run, plus: a row named after a built-in with a paper (its card is read from the code), a
    second task holding two explainers, and an explainer whose name a spreadsheet would run."""
    out = tmp_path_factory.mktemp("site-board") / "run"
    shutil.copytree(run_dir, out)
    base = read_result(run_dir / TASK / "random.json")
    _write_raw(out / TASK / "clip-dissect.json", dataclasses.replace(base, explainer="clip-dissect"))
    _write_raw(out / TASK / "formula.json", dataclasses.replace(base, explainer=FORMULA))
    for name in ("oracle", "random"):
        r = read_result(run_dir / TASK / f"{name}.json")
        _write_raw(out / OTHER / f"{name}.json", dataclasses.replace(r, task=OTHER))
    return out


@pytest.fixture(scope="module")
def site(board, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site-out") / "site"
    publish([board], out)
    return out


def _page(site: Path, rel: str) -> str:
    return (site / rel).read_text(encoding="utf-8")


def _local(page: Path, href: str) -> Path:
    return (page.parent / unquote(urlsplit(href).path)).resolve()


# --- the files -------------------------------------------------------------------------------------

def test_downloads_are_in_the_site_and_hold_every_metric(site, board):
    import re

    index = site / "index.html"
    hrefs = re.findall(r'<a href="([^"]+)" download class="download"', index.read_text())
    assert sorted(hrefs) == ["board.json", "metrics.csv"]
    assert all(_local(index, h).is_file() for h in hrefs)
    assert set(json.loads((site / "board.json").read_text())["tasks"]) == {TASK}  # a task not installed is not ranked
    rows = list(csv.DictReader((site / "metrics.csv").open(encoding="utf-8")))
    assert tuple(rows[0]) == CSV_COLUMNS
    results, _ = read_results_dir(board)
    expected = {(r.task, r.explainer, m.name): m for r in results if r.status == "ok" for m in r.metrics}
    got = {(row["task"], row["explainer"].lstrip("'"), row["metric"]): row for row in rows}
    assert set(got) == set(expected) and len(rows) == len(expected)  # one row per task, explainer and metric
    for key, m in expected.items():
        row = got[key]
        for column, value in (("value", m.value), ("ci_low", m.ci_low), ("ci_high", m.ci_high)):
            assert row[column] == (repr(float(value)) if math.isfinite(value) else ""), (key, column)  # n/a: empty
        assert row["result_file"] and (site / row["result_file"]).is_file()
    kinds = {(r["explainer"], r["kind"]) for r in rows}
    assert {("oracle", "oracle"), ("random", "control"), ("class-name", "control"), ("clip-dissect", "method")} <= kinds
    assert any(r["explainer"] == "'" + FORMULA for r in rows)  # a spreadsheet shows it, never runs it
    assert not any(r["explainer"].startswith("=") for r in rows)
    headline = [r for r in rows if r["task"] == TASK and r["headline"] == "yes"]
    assert {r["metric"] for r in headline} == {"spearman_reliance"}
    assert next(r for r in headline if r["explainer"] == "toy-a")["rank_interval"].startswith(("[", "1", "2", "3"))


def test_pages_read_the_method_cards_and_link_the_docs(site):
    index = _page(site, "index.html")
    assert 'id="methods"' in index and "Random words (control)" in index and "Oracle (ceiling)" in index
    assert ('<a href="https://arxiv.org/abs/2204.10965" class="external" rel="external noopener noreferrer">'
            'CLIP-Dissect: Automatic Description') in index
    assert "toy-a" in index and "no card" in index  # not installed where the site was built: said, not invented
    page = _page(site, "explainers/clip-dissect.html")
    assert "Tuomas Oikarinen, Tsui-Wei Weng" in page and "https://github.com/Trustworthy-ML-Lab/CLIP-dissect" in page
    assert "ICLR 2023" in page and "soft-WPMI" in page
    assert 'href="../docs/explainers/clip-dissect.html"' in page
    assert "<h2>Explainer <code>clip-dissect</code></h2>" in _page(site, "docs/explainers/clip-dissect.html")
    random = _page(site, "explainers/random.html")
    assert "Random words (control)" in random and 'class="badge control"' in random
    task = _page(site, f"tasks/{TASK}.html")
    assert f'href="../docs/tasks/{TASK}.html"' in task and (site / "docs" / "tasks" / f"{TASK}.html").is_file()
    assert f"docs/tasks/{OTHER}.md" in _page(site, f"tasks/{OTHER}.html")  # not a built-in: named, not linked


def test_controls_and_oracle_are_marked_with_a_legend_on_every_plot(site):
    import re

    for rel in ("index.html", f"tasks/{TASK}.html"):
        page = _page(site, rel)
        assert "grey: not ranked" not in page
        svgs = re.findall(r'<svg [^>]*class="intervals".*?</svg>', page, flags=re.S)
        assert svgs, rel
        for svg in svgs:
            legend = re.search(r'<g class="legend">(.*?)</g></svg>', svg, flags=re.S)
            assert legend, rel
            labels = re.findall(r"<text [^>]*>([^<]+)</text>", legend.group(1))
            assert "control (not ranked)" in labels and "oracle (ceiling)" in labels and "chance" in labels, labels
            if OTHER not in svg:  # the ranked task: its compared methods' rank colours too
                assert any(label.startswith("best rank ") for label in labels), labels
            assert 'data-kind="control"' in svg and "<rect" in svg and "<polygon" in svg  # square, diamond
    scatter = (site / "img" / f"scatter-{TASK}.svg").read_text()
    assert "replicate 0" in scatter and "replicate 1" in scatter and "random (control)" in scatter
    assert "oracle (oracle)" in scatter


def test_submission_page_exists_and_every_page_links_it(site):
    page = _page(site, "submit.html")
    for words in ("The release id", "The results folder", "The code", "The lock file", "environment.lock",
                  "fexbench verify", "private seed", "verified", "How it appears"):
        assert words in page, words
    assert 'href="docs/guides/writing-an-explainer.html"' in page and (site / "docs/guides/release.html").is_file()
    for html in sorted(site.rglob("*.html")):
        text = html.read_text(encoding="utf-8")
        hrefs = [h for h in __import__("re").findall(r'href="([^"]*submit\.html)"', text)]
        assert hrefs and all(_local(html, h) == (site / "submit.html").resolve() for h in hrefs), html


# --- in a real browser ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    if find_chromium() is None:
        pytest.skip("chromium/chromedriver not found (apt-get install -y chromium chromium-driver)")
    pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[test]')")
    from fexbench.report.browser import start

    driver = start()
    yield driver
    driver.quit()


def _open(browser, page: Path, phone: bool = False):
    if phone:
        emulate_width(browser, *PHONE)
    else:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    browser.get(page.resolve().as_uri())
    errors = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
    assert not errors, errors


def _shown(browser, selector: str) -> list[str]:
    return browser.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).filter(e => e.offsetParent !== null)"
        ".map(e => e.getAttribute('data-kind') || e.getAttribute('data-task') || e.textContent)", selector)


def test_browser_legend_is_drawn_on_every_plot(browser, site):
    for rel in ("index.html", f"tasks/{TASK}.html"):
        _open(browser, site / rel)
        counts = browser.execute_script(
            "return Array.from(document.querySelectorAll('svg.intervals')).map(s => "
            "[s.querySelectorAll('g.legend g.legend-entry').length, s.querySelector('g.legend').getBBox().height])")
        assert counts and all(n >= 3 and h > 5 for n, h in counts), counts


def test_browser_filters_hide_and_show_rows(browser, site):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    _open(browser, site / "index.html")
    form = browser.find_element(By.CSS_SELECTOR, "form.filters[data-table=overview]")
    assert form.is_displayed()
    everything = _shown(browser, "#overview tbody tr")
    assert {"method", "control", "oracle"} <= set(everything)
    browser.find_element(By.CSS_SELECTOR, "input[data-filter=kind][value=control]").click()
    assert "control" not in _shown(browser, "#overview tbody tr")
    assert len(_shown(browser, "#overview tbody tr")) == len(everything) - everything.count("control")
    assert form.find_element(By.CSS_SELECTOR, ".filter-count").text.startswith(
        f"{len(everything) - everything.count('control')} of {len(everything)}")
    browser.find_element(By.CSS_SELECTOR, "input[data-filter=kind][value=control]").click()
    assert _shown(browser, "#overview tbody tr") == everything
    Select(browser.find_element(By.CSS_SELECTOR, "select[data-filter=task]")).select_by_value(OTHER)
    assert _shown(browser, "#overview thead th[data-task]") == [OTHER]  # the other task's column is gone
    assert sorted(_shown(browser, "#overview tbody tr")) == ["control", "oracle"]  # rows with a result on it
    assert _shown(browser, "figure[data-task]") == [OTHER] or not _shown(browser, "figure[data-task]")
    Select(browser.find_element(By.CSS_SELECTOR, "select[data-filter=task]")).select_by_value("")
    assert _shown(browser, "#overview tbody tr") == everything
    _open(browser, site / "tasks" / f"{TASK}.html")  # the task page filters by kind
    browser.find_element(By.CSS_SELECTOR, "input[data-filter=kind][value=oracle]").click()
    assert "oracle" not in _shown(browser, "#task-table tbody tr") and "control" in _shown(browser, "#task-table tbody tr")


def test_browser_download_and_submission_links_resolve(browser, site):
    from selenium.webdriver.common.by import By

    _open(browser, site / "index.html")
    links = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "a.download")]
    assert len(links) == 2
    for href in links:
        path = Path(unquote(urlsplit(href).path))
        assert path.is_file() and site.resolve() in path.parents, href
    browser.find_element(By.LINK_TEXT, "submit a method").click()
    assert browser.title.startswith("Submitting a method")
    assert browser.find_element(By.ID, "send").is_displayed() and browser.find_element(By.ID, "verify").is_displayed()


PAGES = ("index.html", f"tasks/{TASK}.html", "explainers/random.html", "submit.html", "docs/tasks/waterbirds-spurious.html")


@pytest.mark.parametrize("rel", PAGES)
def test_browser_phone_width_has_no_page_overflow(browser, site, rel):
    _open(browser, site / rel, phone=True)
    width = browser.execute_script("return window.innerWidth")
    assert width == PHONE[0]
    page = browser.execute_script("return [document.documentElement.scrollWidth, document.body.scrollWidth]")
    assert max(page) <= width, f"{rel}: the page is {page} px wide on a {width} px screen"
    wide = browser.execute_script(  # anything wider than the screen that is not inside a table's own scroller
        "return Array.from(document.querySelectorAll('body *')).filter(e => !e.closest('.scroller') && "
        "e.getBoundingClientRect().right > window.innerWidth + 0.5).map(e => e.tagName + '.' + e.className)")
    assert not wide, f"{rel}: {wide[:5]}"


@pytest.mark.parametrize("rel,table", [("index.html", "overview"), (f"tasks/{TASK}.html", "task-table")])
def test_browser_phone_width_keeps_the_first_column_in_view(browser, site, rel, table):
    _open(browser, site / rel, phone=True)
    before = browser.execute_script(
        "var s = document.getElementById(arguments[0]).closest('.scroller');"
        "var c = s.querySelector('tbody tr td:first-child'), d = s.querySelector('tbody tr td:nth-child(2)');"
        "return [s.scrollWidth, s.clientWidth, getComputedStyle(c).position, c.getBoundingClientRect().left, "
        "d.getBoundingClientRect().left]", table)
    assert before[0] > before[1], "the table fits: nothing to check"  # the table scrolls in its own scroller
    assert before[2] == "sticky"
    after = browser.execute_script(
        "var s = document.getElementById(arguments[0]).closest('.scroller'); s.scrollLeft = 120;"
        "var c = s.querySelector('tbody tr td:first-child'), d = s.querySelector('tbody tr td:nth-child(2)');"
        "return [c.getBoundingClientRect().left, d.getBoundingClientRect().left, s.getBoundingClientRect().left]",
        table)
    assert abs(after[0] - before[3]) < 1 and abs(after[0] - after[2]) < 1  # the first column stays put
    assert after[1] < before[4] - 50  # the rest scrolled under it


def test_browser_plot_labels_are_not_clipped(browser, site):
    for rel in ("index.html", f"tasks/{TASK}.html"):
        _open(browser, site / rel, phone=True)
        out = browser.execute_script(
            "var bad = [];"
            "document.querySelectorAll('svg.intervals').forEach(function (svg) {"
            "  var box = svg.getBoundingClientRect();"
            "  if (box.right > window.innerWidth + 0.5) { bad.push('svg wider than the screen'); }"
            "  svg.querySelectorAll('text').forEach(function (t) { var r = t.getBoundingClientRect();"
            "    if (r.left < box.left - 0.5 || r.right > box.right + 0.5) { bad.push(t.textContent); } });"
            "});"
            "return bad;")
        assert not out, f"{rel}: {out}"
    _open(browser, site / "img" / f"scatter-{TASK}.svg")  # the matplotlib scatter: its y-axis label too
    out = browser.execute_script(
        "var root = document.documentElement.getBoundingClientRect(), bad = [];"
        "document.querySelectorAll('text').forEach(function (t) { var r = t.getBoundingClientRect();"
        "  if (r.width && (r.left < root.left - 0.5 || r.top < root.top - 0.5 || r.right > root.right + 0.5 ||"
        "      r.bottom > root.bottom + 0.5)) { bad.push(t.textContent); } });"
        "return bad;")
    assert not out, out


def test_browser_first_click_sorts_best_first(browser, site):
    from selenium.webdriver.common.by import By

    _open(browser, site / "tasks" / f"{TASK}.html")
    heads = browser.find_elements(By.CSS_SELECTOR, "#task-table thead th")
    names = [h.text.split("\n")[0].split(" ")[0] for h in heads]

    def column(i: int) -> list[float]:
        cells = browser.find_elements(By.CSS_SELECTOR, f"#task-table tbody td:nth-child({i + 1})")
        return [float(v) for c in cells if (v := c.get_attribute("data-sort") or c.text.strip()) not in ("", "n/a")]

    metric = names.index("spearman_reliance")  # higher is better (from the task's code): highest first
    assert heads[metric].get_attribute("data-order") == "desc"
    heads[metric].click()
    assert heads[metric].get_attribute("aria-sort") == "descending"
    values = column(metric)
    assert len(values) > 3 and values == sorted(values, reverse=True)
    heads[metric].click()  # the second click reverses it
    assert column(metric) == sorted(values)
    cost = names.index("fit")  # "fit + explain s": lower is better, lowest first
    heads[cost].click()
    assert heads[cost].get_attribute("aria-sort") == "ascending" and column(cost) == sorted(column(cost))
    rank = names.index("rank")
    heads[rank].click()
    order = browser.execute_script(
        "return Array.from(document.querySelectorAll('#task-table tbody tr')).map(r => r.getAttribute('data-kind'))")
    assert order[0] == "oracle" and order[-1] == "control"  # the ceiling, the methods by rank, the controls
