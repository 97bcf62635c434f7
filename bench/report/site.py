"""The static leaderboard site: an overview, a page per task and per explainer, from result files.

The site opens from disk (file://), offline: pages load only files inside the site (its own CSS
and scripts, SVG and PNG pictures, copies of the result files, board.json and metrics.csv, the
task and method docs). The only links that leave it are a method card's paper, code and docs
links (http(s) only, marked `class="external"`), which a reader follows on purpose. Every value
from a result file or a card reaches a page through `markup.el`, which escapes it. Method names,
links and descriptions come from the explainers' cards (fexbench.core.card), roles and metric
directions from the registered code, never from a result file. A board whose ground truth
differs from the first is published under boards/<n>/ and linked from the overview.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import csv
import io
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from fexbench.core import registry
from fexbench.core.cache import atomic_write_json, atomic_write_text
from fexbench.core.card import MethodCard, card_of, is_link
from fexbench.analysis.board import BOARD_FILE, board as board_data
from fexbench.core.metrics import MetricValue
from fexbench.core.results import SCHEMA_VERSION, JobResult
from fexbench.core.text import display_text
from fexbench.analysis.comparisons import NotComparable, TaskRanking, ground_truth_identity, rank_all, role
from fexbench.analysis.power import design_note
from fexbench.report import plots
from fexbench.report.assets import CSS, FILTER_JS, SORT_JS
from fexbench.report.declared import declared
from fexbench.report.intervals import Interval, intervals_svg
from fexbench.report.markup import Html, el, join, raw
from fexbench.report.merge import Board, Entry, PublishError, merge

MARKER = ".fexbench-site"  # marks a folder as a site this command may replace
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "base-uri 'none'; form-action 'none'")
CLOUDS_PER_SUBJECT = 2  # targets drawn for each of the most and least biased subjects
UNIT_CLOUDS = 3  # "a few units" of tasks whose targets are units
EVIDENCE_LINES = 3
BIAS_KEYS = ("reliance", "bg_gap", "flip_rate")  # per-subject ground truth that orders subjects by bias
CSV_FILE = "metrics.csv"
FIGURE_KEY = ("Colour and marker (the legend in each picture): a compared method's circle, dark to light blue by the "
              "best end of its rank interval (white: not ranked); a control's grey square; the oracle's amber "
              "diamond; the dashed line is chance.")
SUBMIT_PAGE = "submit.html"
KIND_LABELS = {"method": "compared method", "control": "control", "oracle": "oracle (ceiling)"}
# fexbench's own documentation, next to the package in a source checkout (pip install -e .);
# a wheel has none, and the site then names the docs instead of linking them.
DOCS = Path(__file__).resolve().parents[2] / "docs"
DOC_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,60}")
GUIDES = ("writing-an-explainer", "release", "publishing", "statistics")  # docs the submission page links


def slug(name: Any) -> str:
    """A file name for any string: safe characters kept; anything else (or a collision risk)
    replaced and made unique by a short hash of the original."""
    name = str(name)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip(".-")[:60]
    if safe == name and safe:
        return safe
    return f"{safe or 'x'}-{hashlib.sha1(name.encode('utf-8', 'replace')).hexdigest()[:8]}"


def _num(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}f}" if isinstance(x, (int, float)) and math.isfinite(x) else "n/a"


def _ci(m: MetricValue) -> str:
    return f"[{_num(m.ci_low)}, {_num(m.ci_high)}]" if math.isfinite(m.ci_low) and math.isfinite(m.ci_high) else ""


def _rank(explainer: str, ranking: TaskRanking | None) -> str:
    """A compared method's rank interval among the compared methods; "-" for a control or oracle."""
    if ranking is None or explainer not in ranking.rank_intervals:
        return "-"
    label = ranking.rank_label(explainer)
    won = [c for c, yes in sorted(ranking.beats.get(explainer, {}).items()) if yes]
    return label + (f"; beats {', '.join(won)}" if won else "")


def _rank_order(explainer: str, ranking: TaskRanking | None) -> tuple[int, int, int]:
    """Sort key: the oracle (the ceiling), compared methods by rank interval, controls, the rest."""
    if ranking is None or explainer not in ranking.roles:
        return (3, 0, 0)
    if explainer in ranking.rank_intervals:
        return (1, *ranking.rank_intervals[explainer])
    return ({"oracle": 0, "control": 2}.get(ranking.roles[explainer], 3), 0, 0)


def _rank_sort(explainer: str, ranking: TaskRanking | None) -> str:
    """A data-sort value for a rank cell (the table's sorter compares these as text)."""
    kind, lo, hi = _rank_order(explainer, ranking)
    return f"{kind}{lo:03d}{hi:03d}"


def _task_info(task: str) -> tuple[str, dict[str, str]]:
    """The task's description and its metrics' descriptions, from its declarations (not imported)."""
    found = declared("fexbench.tasks", task)
    return found.description, found.metrics


def _explainer_info(name: str) -> str:
    return declared("fexbench.explainers", name).description


def method_card(name: str) -> MethodCard | None:
    """An explainer's card from its registered class (kind and version the class's own); None
    when it is not installed here or declares none. Never read from a result file."""
    try:
        cls = registry.explainers.get(name)
    except registry.RegistryError:
        return None
    return card_of(cls)


def directions(task: str) -> dict[str, bool]:
    """metric -> higher is better, from the registered task's own metrics ({} when not installed)."""
    try:
        return {m.name: bool(m.higher_is_better) for m in registry.tasks.get(task).metrics}
    except registry.RegistryError:
        return {}


def doc_source(kind: str, name: str) -> Path | None:
    """fexbench's own doc of a built-in task or explainer (docs/tasks/<name>.md,
    docs/explainers/<name>.md) or one of the GUIDES (docs/<name>.md), None for anything else: the
    name must be a built-in's, so a name from a result file never reaches the file system."""
    if kind == "guide":
        path = DOCS / f"{name}.md" if name in GUIDES else None
        return path if path is not None and path.is_file() else None
    group = {"task": registry.tasks, "explainer": registry.explainers}[kind]
    if not (isinstance(name, str) and DOC_NAME.fullmatch(name) and name in group.builtin_names()):
        return None
    path = DOCS / f"{kind}s" / f"{name}.md"
    return path if path.is_file() else None


def _external(label: Any, url: str) -> Html:
    """A link that leaves the site (a card's paper, code or docs): http(s) only, else plain text."""
    if is_link(url):
        return el("a", label, href=url, class_="external", rel="external noopener noreferrer")
    return el("span", label, " (", el("code", url), ")") if url else el("span", label)


def _inline(line: str) -> Html:
    """One line of Markdown as escaped text: `code` spans kept as code, [text](link) as its text."""
    parts, pos = [], 0
    for m in re.finditer(r"`([^`]+)`|\[([^\]]+)\]\(([^)\s]+)\)", line):
        parts.append(line[pos:m.start()])
        parts.append(el("code", m.group(1)) if m.group(1) is not None else m.group(2))
        pos = m.end()
    parts.append(line[pos:])
    return join(*parts)


def _lines(lines: Sequence[str]) -> Html:
    """Preformatted lines: each escaped (display_text turns a newline into a space), joined by <br>."""
    return el("pre", *[join(line, el("br") if k < len(lines) - 1 else None) for k, line in enumerate(lines)])


def render_markdown(source: str) -> Html:
    """fexbench's own docs as a page: headings, paragraphs, lists, tables and code blocks. Every
    character is escaped (no raw HTML passes); links are shown as their text (the docs' relative
    links would point outside the site)."""
    out: list[Html] = []
    lines = source.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            block = []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                block.append(lines[i])
                i += 1
            out.append(_lines(block))
            i += 1
            continue
        if not line.strip():
            i += 1
            continue
        heading = re.match(r"(#{1,6})\s+(.*)", line)
        if heading:
            level = min(len(heading.group(1)) + 1, 6)
            out.append(el(f"h{level}", _inline(heading.group(2))))
            i += 1
            continue
        block = []
        while i < len(lines) and lines[i].strip() and not lines[i].startswith(("```", "#")):
            block.append(lines[i])
            i += 1
        if block[0].lstrip().startswith("|"):
            cells = [[c.strip() for c in b.strip().strip("|").split("|")] for b in block
                     if not re.fullmatch(r"\s*\|?[\s:|-]+\|?\s*", b)]
            out.append(el("div", el("table", el("thead", el("tr", *[el("th", _inline(c)) for c in cells[0]])),
                                    el("tbody", *[el("tr", *[el("td", _inline(c)) for c in row]) for row in cells[1:]])),
                          class_="scroller"))
        elif re.match(r"\s*([-*]|\d+\.)\s", block[0]):
            items: list[list[str]] = []
            for b in block:
                if re.match(r"\s{0,1}([-*]|\d+\.)\s", b):
                    items.append([re.sub(r"^\s*([-*]|\d+\.)\s+", "", b)])
                elif items:
                    items[-1].append(b.strip())
            out.append(el("ul", *[el("li", _inline(" ".join(item))) for item in items]))
        else:
            out.append(el("p", _inline(" ".join(b.strip() for b in block))))
    return join(*out)


def _excluded(task: str, ranking: TaskRanking) -> str:
    """Why explainers were not ranked, one clause per distinct reason (an old run's files all
    share one), the explainers named before it."""
    reasons: dict[str, list[str]] = {}
    for explainer, why in sorted(ranking.excluded.items()):
        reasons.setdefault(str(why).replace(f"{task}/{explainer}: ", ""), []).append(explainer)
    return "; ".join(f"{', '.join(names)}: {why}" for why, names in reasons.items())


@dataclass
class Page:
    """Where a page sits: `up` leads from it to the board's root, `site` to the site's root."""
    up: str
    site: str


def _page(title: str, where: Page, board_title: str, *body: Any) -> str:
    head = el("head", raw('<meta charset="utf-8">'),
              el("meta", http_equiv="Content-Security-Policy", content=CSP),
              el("meta", name="viewport", content="width=device-width, initial-scale=1"),
              el("title", f"{title} - {board_title}"),
              el("link", rel="stylesheet", href=f"{where.site}assets/site.css"),
              el("script", src=f"{where.site}assets/sort.js", defer=True),
              el("script", src=f"{where.site}assets/filter.js", defer=True))
    nav = el("header", el("a", el("strong", board_title), href=f"{where.up}index.html"),
             el("a", "overview", href=f"{where.up}index.html"),
             el("a", "methods", href=f"{where.up}index.html#methods"),
             el("a", "downloads", href=f"{where.up}index.html#downloads"),
             el("a", "submit a method", href=f"{where.site}{SUBMIT_PAGE}"), class_="site")
    foot = el("footer", el("p", f"Generated by fexbench (results schema {SCHEMA_VERSION}) on "
                           f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", class_="note"))
    return "<!DOCTYPE html>\n" + el("html", head, el("body", nav, el("main", el("h1", title), *body), foot), lang="en")


def _table(headers: Sequence[Any], rows: Iterable[Sequence[Any]], sortable: bool = True,
           row_attrs: Sequence[Mapping[str, Any]] | None = None, **attrs) -> Html:
    """A table in its own horizontal scroller (the page itself never scrolls sideways), its
    first column sticky; `row_attrs` (one mapping per row) e.g. data_kind for the filters."""
    head = el("thead", el("tr", *[h if isinstance(h, Html) and h.startswith("<th") else el("th", h)
                                  for h in headers]))
    rows = list(rows)
    extra = list(row_attrs) if row_attrs is not None else [{}] * len(rows)
    body = el("tbody", *[el("tr", *[c if isinstance(c, Html) and c.startswith("<td") else el("td", c) for c in row],
                            **dict(more)) for row, more in zip(rows, extra)])
    return el("div", el("table", head, body, class_="sortable" if sortable else None, **attrs), class_="scroller")


def _filters(table_id: str, kinds: Sequence[str], tasks: Sequence[str] = ()) -> Html:
    """The filter bar of a table (assets/filter.js): a task select (when given) and one checkbox
    per kind present. Hidden until the script shows it: without the script it would do nothing."""
    task = el("label", "task ", el("select", el("option", "all tasks", value=""),
                                   *[el("option", t, value=t) for t in tasks], data_filter="task")) if tasks else None
    boxes = el("fieldset", el("legend", "show"),
               *[el("label", el("input", type="checkbox", value=k, checked=True, data_filter="kind"), " ",
                    KIND_LABELS.get(k, k) + ("s" if k in ("method", "control") else ""))
                 for k in ("method", "control", "oracle") if k in kinds])
    return el("form", task, boxes, el("span", "", class_="filter-count note", aria_live="polite"),
              class_="filters", data_table=table_id, hidden=True)


def _kv(pairs: Iterable[tuple[Any, Any]]) -> Html:
    return el("dl", *[join(el("dt", k), el("dd", v)) for k, v in pairs], class_="kv")


@dataclass
class BoardSite:
    board: Board
    out: Path  # the board's folder
    site_up: str  # from the board's folder to the site's root
    title: str
    links: Sequence[tuple[str, str, str]] = ()  # other boards: (label, href from the board root, note)
    notes: Sequence[str] = ()
    written: list[Path] = field(default_factory=list)

    def __post_init__(self):
        self.results: list[JobResult] = self.board.results
        self.entries: dict[tuple[str, str], Entry] = dict(self.board.entries)
        self.rankings = rank_all(self.results)
        self.tasks = sorted({r.task for r in self.results})
        self.roles = {r.explainer: role(r.explainer) for r in self.results}  # from the code, not the files
        order = {"oracle": 0, "method": 1, "control": 2}
        self.explainers = sorted(self.roles, key=lambda e: (order[self.roles[e]], e))
        self.oracle = {e: k == "oracle" for e, k in self.roles.items()}
        self.cards = {e: method_card(e) for e in self.explainers}  # from the code, not the files
        self.directions = {t: directions(t) for t in self.tasks}
        self.docs: set[tuple[str, str]] = set()  # (kind, name) of the doc pages these pages link

    # --- shared pieces ----------------------------------------------------------------------------
    def _write(self, rel: str, text: str) -> None:
        """Straight into the private staging folder, which `publish` swaps in whole (atomically)."""
        path = self.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        self.written.append(path)

    def headline(self, task: str) -> str | None:
        ranking = self.rankings.get(task)
        if ranking is not None:
            return ranking.metric
        return next((r.metrics[0].name for r in self.results if r.task == task and r.status == "ok" and r.metrics),
                    None)

    def json_href(self, task: str, explainer: str) -> str:
        return f"results/{slug(task)}/{slug(explainer)}.json"

    def task_href(self, task: str) -> str:
        return f"tasks/{slug(task)}.html"

    def explainer_href(self, explainer: str) -> str:
        return f"explainers/{slug(explainer)}.html"

    def result(self, task: str, explainer: str) -> JobResult | None:
        entry = self.entries.get((task, explainer))
        return entry.result if entry else None

    def _name(self, explainer: str, up: str) -> Html:
        kind = self.roles.get(explainer, "method")
        card = self.cards.get(explainer)
        return join(el("a", explainer, href=up + self.explainer_href(explainer),
                       title=card.display_name if card else None),
                    el("span", kind, class_=f"badge {kind}", title=KIND_LABELS[kind]) if kind != "method" else None)

    def higher_is_better(self, task: str, metric: str | None) -> bool | None:
        """A metric's direction from the registered task's code; from the result files only when
        the task is not installed here (then the page says nothing ranks on it anyway)."""
        if metric in self.directions.get(task, {}):
            return self.directions[task][metric]
        for r in self.results:
            if r.task == task:
                for m in r.metrics:
                    if m.name == metric:
                        return bool(m.higher_is_better)
        return None

    def order(self, task: str, metric: str | None) -> str:
        """The first click's sort order of a metric's column: best first."""
        return "asc" if self.higher_is_better(task, metric) is False else "desc"

    def doc_href(self, kind: str, name: str, up: str) -> str | None:
        """The site's page of fexbench's doc of a task or explainer (written by `publish`), or None."""
        if doc_source(kind, name) is None:
            return None
        self.docs.add((kind, name))
        return f"{up}{self.site_up}docs/{kind}s/{slug(name)}.html"

    def intervals(self, task: str, metric: str) -> list[Interval]:
        ranking = self.rankings.get(task)
        rows = []
        for explainer in self.explainers:
            r = self.result(task, explainer)
            if r is None or r.status != "ok":
                continue
            m = next((m for m in r.metrics if m.name == metric), None)
            if m is not None:
                rows.append(Interval(explainer, m, _rank(explainer, ranking), self.roles.get(explainer, "method")))
        return sorted(rows, key=lambda row: (_rank_order(row.label, ranking), row.label))

    # --- the result files -------------------------------------------------------------------------
    def copy_results(self) -> None:
        for (task, explainer), entry in self.entries.items():
            dest = self.out / self.json_href(task, explainer)
            dest.parent.mkdir(parents=True, exist_ok=True)
            self.written.append(Path(shutil.copyfile(entry.path, dest)))

    # --- the overview -----------------------------------------------------------------------------
    def overview(self) -> None:
        where = Page("", self.site_up)
        headers: list[Any] = [el("th", "explainer")]
        for task in self.tasks:
            metric = self.headline(task)
            arrow = self._arrow(task, metric)
            headers.append(el("th", task, el("br"), el("span", f"{metric or 'no metric'} {arrow}", class_="note"),
                              class_="num", data_task=task, data_order=self.order(task, metric)))
        rows, attrs = [], []
        for explainer in self.explainers:
            row: list[Any] = [el("td", self._name(explainer, ""), data_sort=explainer, class_="explainer")]
            for task in self.tasks:
                row.append(self._overview_cell(task, explainer))
            rows.append(row)
            attrs.append({"data_kind": self.roles.get(explainer, "method")})
        figures = [el("figure", intervals_svg(self.intervals(t, self.headline(t)), f"{t}: {self.headline(t)}"),
                      el("figcaption", el("a", t, href=self.task_href(t)),
                         f": {self.headline(t)} per explainer, point estimate and 95% CI. {FIGURE_KEY}"),
                      data_task=t)
                   for t in self.tasks if self.headline(t) and self.intervals(t, self.headline(t))]
        intro = el("p", "Each cell is a task's headline (first) metric: the point estimate, its 95% CI, and a "
                   "compared method's rank interval among the compared methods: [1 + methods significantly better, "
                   "M - methods significantly worse] (paired tests over the same units and replicates, Holm within "
                   "the compared methods). A wide interval means the data cannot place the method more precisely, "
                   "not a shared first place; 'beats' names the controls it significantly beats. Controls and the "
                   "oracle (the ceiling) are marked ", el("span", "control", class_="badge control"), " ",
                   el("span", "oracle", class_="badge oracle"), " and get no rank. "
                   "Click a column header to sort, best first; filter by task and kind above the table. Each "
                   "task's page has every metric, their definitions, and the scatter behind the ranking; each "
                   "explainer's page its card, its words and its cost. ",
                   join("The statistics behind the intervals: ", el("a", "docs/statistics.md",
                                                                      href=f"{self.site_up}docs/guides/statistics.html"),
                        ".") if doc_source("guide", "statistics") else None, class_="note")
        excluded = [el("li", el("a", t, href=self.task_href(t)), ": not ranked: ", _excluded(t, self.rankings[t]))
                    for t in self.tasks if t in self.rankings and self.rankings[t].excluded]
        runs = el("p", "Runs on this board: ", join(*[join(el("code", str(r)), " ") for r in self.board.runs]),
                  class_="note")
        others = [el("section", el("h2", "Other boards"),
                     el("p", "These runs were scored against other ground truth (task version or data/weights "
                        "hashes), so their numbers are not comparable with this board's.", class_="note"),
                     el("ul", *[el("li", el("a", label, href=href), ": ", note) for label, href, note in self.links]))
                  ] if self.links else []
        notes = [el("details", el("summary", f"{len(self.notes)} note(s) on the input"),
                    el("ul", *[el("li", n) for n in self.notes]))] if self.notes else []
        kinds = sorted(set(self.roles.values()))
        body = [intro, runs,
                _filters("overview", kinds, self.tasks),
                _table(headers, rows, row_attrs=attrs, id="overview"),
                el("section", el("h2", "Confidence intervals"), *figures),
                el("section", el("h2", "Not ranked"), el("ul", *excluded)) if excluded else None,
                self._methods(),
                self._downloads(),
                *others, *notes]
        self._write("index.html", _page("Overview", where, self.title, *body))

    def _methods(self) -> Html:
        """The explainers' cards, one row each: what the board compares, from the code."""
        headers = [el("th", "explainer"), el("th", "name"), el("th", "kind"), el("th", "paper"), el("th", "code"),
                   el("th", "authors"), el("th", "version", class_="num"), el("th", "docs")]
        rows, attrs = [], []
        for explainer in self.explainers:
            card = self.cards.get(explainer)
            kind = self.roles.get(explainer, "method")
            docs = self.doc_href("explainer", explainer, "")
            doc_links = [el("a", "fexbench docs", href=docs) if docs else None,
                         _external("docs", card.docs_url) if card and card.docs_url else None]
            if card is None:
                rows.append([el("td", self._name(explainer, ""), data_sort=explainer, class_="explainer"),
                             el("td", "no card (not installed where the site was built, or declares none)",
                                class_="note"), el("td", KIND_LABELS[kind]), "", "", "", "",
                             el("td", *[join(d, " ") for d in doc_links if d])])
            else:
                paper = card.paper
                rows.append([el("td", self._name(explainer, ""), data_sort=explainer, class_="explainer"),
                             card.display_name,
                             el("td", KIND_LABELS[kind]),
                             el("td", _external(paper.title, paper.url), el("br"),
                                el("span", f"{paper.venue}", class_="note")) if paper else
                             el("td", "none: " + ("a control" if kind == "control" else "the ceiling" if kind ==
                                                  "oracle" else "no paper"), class_="note"),
                             el("td", _external("code", card.code_url)) if card.code_url else el("td", "-"),
                             ", ".join(card.authors) if card.authors else "-",
                             el("td", str(card.version) if card.version is not None else "", class_="num"),
                             el("td", *[join(d, " ") for d in doc_links if d])])
            attrs.append({"data_kind": kind})
        return el("section", el("h2", "Methods", id="methods"),
                  el("p", "From each explainer's method card (its class's ", el("code", "card"), ", ",
                     el("code", "fexbench.core.card"), "); the kind and version are the class's own. Paper and code "
                     "links leave the site.", class_="note"),
                  _table(headers, rows, row_attrs=attrs, id="methods-table"))

    def _downloads(self) -> Html:
        return el("section", el("h2", "Downloads", id="downloads"),
                  el("ul", el("li", el("a", BOARD_FILE, href=BOARD_FILE, download=True, class_="download"),
                              ": every task's conclusions on its headline metric (values, intervals, roles, rank "
                              "intervals, controls beaten, the oracle's gaps), as data"),
                     el("li", el("a", CSV_FILE, href=CSV_FILE, download=True, class_="download"),
                        ": every metric of every result, one row per task, explainer and metric, with its 95% CI, "
                        "direction, chance, status and result file"),
                     el("li", "each result file (JSON), linked from its cell, under ", el("code", "results/"))),
                  el("p", "To add a method to this board, see ", el("a", "submitting a method",
                                                                    href=f"{self.site_up}{SUBMIT_PAGE}"), ".",
                     class_="note"))

    def _arrow(self, task: str, metric: str | None) -> str:
        higher = self.higher_is_better(task, metric)
        return "" if higher is None else "↑ higher is better" if higher else "↓ lower is better"

    def _overview_cell(self, task: str, explainer: str) -> Html:
        r = self.result(task, explainer)
        if r is None:
            return el("td", "", data_sort="", data_task=task, data_empty=True)
        metric = self.headline(task)
        m = next((m for m in r.metrics if m.name == metric), None) if r.status == "ok" else None
        json_link = el("a", "json", href=self.json_href(task, explainer), class_="note",
                       title=f"job {r.job_key}, {r.created}")
        if m is None:
            return el("td", el("span", r.status, class_=f"status-{r.status}"), " ", json_link, data_sort="",
                      data_task=task)
        rank = _rank(explainer, self.rankings.get(task))
        return el("td", el("a", _num(m.value), href=self.task_href(task)), " ", el("span", _ci(m), class_="ci"),
                  el("span", rank, class_="rank", title="rank group"), " ", json_link,
                  data_sort=repr(m.value) if math.isfinite(m.value) else "", class_="num", data_task=task)

    # --- a task's page ----------------------------------------------------------------------------
    def task_page(self, task: str) -> None:
        where = Page("../", self.site_up + "../")
        description, declared = _task_info(task)
        rows_results = [self.result(task, e) for e in self.explainers if self.result(task, e) is not None]
        ranking = self.rankings.get(task)
        metrics: dict[str, MetricValue] = {}
        for r in rows_results:
            for m in r.metrics:
                metrics.setdefault(m.name, m)
        higher = {name: self.higher_is_better(task, name) for name in metrics}
        headers: list[Any] = [el("th", "explainer"), el("th", "rank")]
        for name in metrics:
            headers.append(el("th", name, " ", "↓" if higher[name] is False else "↑", " ",
                              el("a", "def", href=f"#metric-{slug(name)}", class_="note",
                                 title="definition of this metric"), class_="num", data_order=self.order(task, name)))
        headers += [el("th", "replicates", class_="num", data_order="desc"),
                    el("th", "seeds", class_="num", data_order="desc"),
                    el("th", "fit + explain s", class_="num"), el("th", "peak MB", class_="num"),
                    el("th", "status"), el("th", "provenance")]

        def rank_key(r):
            return (r.status != "ok", _rank_order(r.explainer, ranking), r.explainer)

        rows, attrs = [], []
        for r in sorted(rows_results, key=rank_key):
            rank = _rank(r.explainer, ranking)
            values = {m.name: m for m in r.metrics}
            attrs.append({"data_kind": self.roles.get(r.explainer, "method")})
            row: list[Any] = [el("td", self._name(r.explainer, "../"), data_sort=r.explainer, class_="explainer"),
                              el("td", rank, data_sort=_rank_sort(r.explainer, ranking))]
            for name in metrics:
                m = values.get(name)
                row.append(el("td", _num(m.value), " ", el("span", _ci(m), class_="ci"), class_="num",
                              data_sort=repr(m.value) if math.isfinite(m.value) else "")
                           if m is not None and r.status == "ok" else el("td", "", data_sort=""))
            status = r.status if r.status == "ok" else f"{r.status}: {((r.error or '').splitlines() or [''])[0][:200]}"
            row += [el("td", str(max(1, len(r.replicates))), class_="num"),
                    el("td", str(len(r.explainer_seeds)), class_="num"),
                    el("td", _num(r.fit_time_s + r.explain_time_s, 2), class_="num"),
                    el("td", _num(r.peak_rss_mb, 0), class_="num"),
                    el("td", status, class_=f"status-{r.status}"),
                    el("td", self._provenance(r, "../"))]
            rows.append(row)
        figures = [el("figure", intervals_svg(drawn, f"{name}"),
                      el("figcaption", el("a", f"{name}", href=f"#metric-{slug(name)}"),
                         ": point estimate and 95% CI per explainer; the rank colours are the headline metric's. ",
                         FIGURE_KEY))
                   for name in metrics if (drawn := self.intervals(task, name))]
        scatter = self._scatter(task, rows_results)
        excluded = ranking.excluded if ranking else {}
        definitions = []
        for name, m in metrics.items():
            d = declared.get(name)
            definitions.append(join(
                el("dt", name, id=f"metric-{slug(name)}"),
                el("dd", el("p", d or
                            "(no description: this task is not installed where the site was built)"),
                   _kv([("direction", "lower is better" if higher[name] is False else "higher is better"),
                        ("range", f"[{_num(m.value_range[0], 2)}, {_num(m.value_range[1], 2)}]"),
                        ("chance", _num(m.chance) if m.chance is not None else "not defined"),
                        ("category", m.category),
                        ("headline", "yes: the overview and the rank groups use it"
                         if name == self.headline(task) else "no")]))))
        doc = self.doc_href("task", task, "../")
        body = [el("p", description or "", class_="note") if description else None,
                el("p", "Rank groups are on the headline metric ", el("code", self.headline(task) or "-"),
                   ". Full definitions: the ", el("a", "definitions section", href="#definitions"),
                   " below, and ", el("a", f"the task's documentation", href=doc) if doc else
                   join("docs/tasks/", task, ".md in the fexbench repository"), ". Click a column to sort it, "
                   "best first.", class_="note"),
                _filters("task-table", sorted({a["data_kind"] for a in attrs})),
                _table(headers, rows, row_attrs=attrs, id="task-table"),
                el("p", "Not ranked: ", _excluded(task, ranking), class_="note") if excluded else None,
                el("p", note, class_="note") if (note := self._design_note(rows_results)) else None,
                el("section", el("h2", "Confidence intervals"), *figures),
                el("section", el("h2", "Why the ranking: explanation against measured ground truth"), *scatter),
                el("section", el("h2", "Definitions", id="definitions"), el("dl", *definitions, class_="defs"))]
        self._write(self.task_href(task), _page(task, where, self.title, *body))

    @staticmethod
    def _design_note(results: Sequence[JobResult]) -> str | None:
        """What the design resolves; nothing for a task not installed here (its direction is unknown)."""
        try:
            return design_note(results)
        except NotComparable:
            return None

    def _scatter(self, task: str, results: Sequence[JobResult]) -> list[Html]:
        spec = plots.SCATTERS.get(task)
        if spec is None:
            return [el("p", "No per-subject scatter is drawn for this task: its metrics are not a correlation of an "
                       "explanation score with a measured per-subject quantity (see the definitions below).",
                       class_="note")]
        panels = []
        for r in results:
            if r.status != "ok":
                continue
            sets = [rep.get("per_subject") or {} for rep in r.replicates] if r.replicates else [r.per_subject]
            points = plots.scatter_points(sets, spec)
            if any(xs for xs, _ in points):
                panels.append((r.explainer, points))
        if not panels:
            return [el("p", f"The results hold no per-subject {spec.score} and {spec.truth} to draw.", class_="note")]
        self.written.append(plots.scatter_svg(self.out / f"img/scatter-{slug(task)}.svg", panels, spec,
                                              kinds=self.roles))
        return [el("figure", el("img", src=f"../img/scatter-{slug(task)}.svg",
                                alt=f"{spec.score} against {spec.truth} per explainer"),
                   el("figcaption", "One panel per explainer: each point a subject (or a class of a subject), its "
                      "explanation's ", el("code", spec.score), " against the measured ", el("code", spec.truth),
                      "; one colour per replicate (the legend); ρ is the Spearman correlation of the points. A "
                      "method ranks high when its points rise together; a control's and the oracle's panels are "
                      "marked in their titles."))]

    def _provenance(self, r: JobResult, up: str) -> Html:
        entry = self.entries[(r.task, r.explainer)]
        pairs: list[tuple[Any, Any]] = [
            ("run folder", str(entry.run)), ("run date", r.created), ("job key", r.job_key),
            ("schema", str(r.schema_version)), ("digest", r.digest or "none (unverified)"), ("seed", str(r.seed)),
            ("explainer seeds", ", ".join(map(str, r.explainer_seeds[:8]))
             + (f" … ({len(r.explainer_seeds)})" if len(r.explainer_seeds) > 8 else "")),
            ("task version", ground_truth_identity(r).get("task_version", "?"))]
        pairs += [(f"version: {k}", v) for k, v in sorted(r.versions.items())]
        pairs += [(f"hash: {k}", v) for k, v in sorted(r.hashes.items())]
        for rep in r.replicates[1:]:
            pairs += [(f"r{rep.get('index', '?')} hash: {k}", v) for k, v in sorted((rep.get("hashes") or {}).items())]
        config = json.dumps(r.config, indent=1, sort_keys=True, default=str)
        return el("details", el("summary", "provenance"),
                  el("p", el("a", "result file (JSON)", href=up + self.json_href(r.task, r.explainer))),
                  _kv(pairs), el("p", "config:"), _lines(config[:4000].splitlines()))

    # --- an explainer's page ----------------------------------------------------------------------
    def explainer_page(self, explainer: str) -> None:
        where = Page("../", self.site_up + "../")
        results = [r for t in self.tasks if (r := self.result(t, explainer)) is not None]
        headers = ["task", el("th", "headline metric"), el("th", "value", class_="num"), el("th", "rank", class_="num"),
                   "status", el("th", "fit s", class_="num"), el("th", "explain s", class_="num"),
                   el("th", "wall s", class_="num"), el("th", "peak MB", class_="num"), "result"]
        rows = []
        for r in results:
            metric = self.headline(r.task)
            m = next((m for m in r.metrics if m.name == metric), None) if r.status == "ok" else None
            rank = _rank(explainer, self.rankings.get(r.task))
            rows.append([el("td", el("a", r.task, href="../" + self.task_href(r.task))), metric or "",
                         el("td", _num(m.value) if m else "", " ", el("span", _ci(m) if m else "", class_="ci"),
                            class_="num", data_sort=repr(m.value) if m and math.isfinite(m.value) else ""),
                         el("td", rank, class_="num", data_sort=_rank_sort(explainer, self.rankings.get(r.task))),
                         el("td", r.status, class_=f"status-{r.status}"),
                         el("td", _num(r.fit_time_s, 2), class_="num"), el("td", _num(r.explain_time_s, 2), class_="num"),
                         el("td", _num(r.wall_time_s, 1), class_="num"), el("td", _num(r.peak_rss_mb, 0), class_="num"),
                         el("td", el("a", "json", href="../" + self.json_href(r.task, explainer)))])
        errors = [el("div", el("h3", f"{r.task}: {r.status}"), el("pre", (r.error or "")[:4000]))
                  for r in results if r.status != "ok"]
        sections = [self._clouds(explainer, r) for r in results if r.status == "ok"]
        body = [self._card(explainer),
                el("p", "An oracle reads the ground truth: it marks the ceiling, it is not a method.", class_="note")
                if self.oracle.get(explainer) else None,
                el("h2", "Results and cost"), _table(headers, rows, id="explainer-table"),
                el("section", el("h2", "Errors"), *errors) if errors else None,
                el("h2", "What it says"),
                el("p", "Word clouds (size proportional to weight) of its explanations for the most and least biased "
                   "subjects by measured ground truth, and a few units; below each, its first evidence lines.",
                   class_="note"),
                *sections]
        self._write(self.explainer_href(explainer), _page(explainer, where, self.title, *body))

    def _card(self, explainer: str) -> Html:
        """The explainer's method card (from its class), or what is known without one."""
        kind = self.roles.get(explainer, "method")
        card = self.cards.get(explainer)
        docs = self.doc_href("explainer", explainer, "../")
        badge = el("span", KIND_LABELS[kind], class_=f"badge {kind}")
        if card is None:
            description = _explainer_info(explainer)
            return el("section", el("p", badge, " ", el("span", "No method card: the explainer is not installed where "
                                                                "this site was built, or it declares none.",
                                                        class_="note")),
                      el("p", description, class_="note") if description else None,
                      el("p", el("a", "fexbench's documentation of it", href=docs)) if docs else None,
                      class_="card")
        pairs: list[tuple[Any, Any]] = [("kind", badge)]
        if card.paper is not None:
            p = card.paper
            pairs.append(("paper", join(_external(p.title, p.url), f" ({p.venue}, {p.year})")))
        elif kind == "method":
            pairs.append(("paper", "none declared"))
        if card.authors:
            pairs.append(("authors", ", ".join(card.authors)))
        if card.code_url:
            pairs.append(("code", _external(card.code_url, card.code_url)))
        elif kind == "method":
            pairs.append(("code", "none released"))
        pairs.append(("version", join(str(card.version), el("span", " (the behaviour version in every job key)",
                                                             class_="note"))))
        if card.note:
            pairs.append(("note", card.note))
        links = [el("a", "fexbench's documentation", href=docs) if docs else None,
                 _external("the authors' documentation", card.docs_url) if card.docs_url else None]
        if any(links):
            pairs.append(("docs", join(*[join(link, " ") for link in links if link])))
        return el("section", el("h2", card.display_name), el("p", card.description),
                  el("dl", *[join(el("dt", k), el("dd", v)) for k, v in pairs], class_="card"), class_="card")

    def _clouds(self, explainer: str, r: JobResult) -> Html:
        chosen, note = choose_explanations(r)
        figures = []
        for i, (subject, target, weights, evidence, total) in enumerate(chosen):
            rel = f"img/clouds/{slug(explainer)}/{slug(r.task)}-{i}.png"
            try:
                self.written.append(plots.cloud_png(self.out / rel, weights))
                picture = el("img", src="../" + rel, alt=f"word cloud of {explainer} for {subject} / {target}",
                             width="320", height="180")
            except ValueError:
                picture = el("p", "(no positive weights to draw)", class_="note")
            top = ", ".join(f"{w} ({_num(v, 2)})" for w, v in sorted(weights.items(), key=lambda kv: -kv[1])[:8])
            shown = [el("li", str(line)[:300]) for line in evidence[:EVIDENCE_LINES]]
            more = f" of {total}" if total and total > len(shown) else ""
            figures.append(el("figure", picture, el("figcaption", el("strong", f"{subject} / {target}"),
                                                     el("br"), top,
                                                     el("ul", *shown, class_="evidence") if shown else None,
                                                     el("span", f"{len(shown)} evidence line(s){more} shown",
                                                        class_="note") if shown else None)))
        return el("section", el("h3", el("a", r.task, href="../" + self.task_href(r.task))),
                  el("p", note, class_="note") if note else None, el("div", *figures, class_="clouds"))

    # --- every metric as CSV ------------------------------------------------------------------------
    def metrics_csv(self) -> str:
        """One row per (task, explainer, metric) with its value and 95% CI; a result without metrics
        (an error, a skip) is one row with its status. Kind and direction from the code."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for task in self.tasks:
            ranking = self.rankings.get(task)
            for explainer in self.explainers:
                r = self.result(task, explainer)
                if r is None:
                    continue
                common = [_csv_text(task), _csv_text(explainer), self.roles.get(explainer, "method")]
                tail = [_csv_text(r.status), str(max(1, len(r.replicates))), self.json_href(task, explainer)]
                if r.status != "ok" or not r.metrics:
                    writer.writerow(common + [""] * 10 + tail)
                    continue
                for m in r.metrics:
                    higher = self.higher_is_better(task, m.name)
                    headline = m.name == self.headline(task)
                    rank = (_csv_text(ranking.rank_label(explainer)) if headline and ranking is not None
                            and explainer in ranking.rank_intervals else "")
                    writer.writerow(common + [_csv_text(m.name), "yes" if headline else "no",
                                              "" if higher is None else "yes" if higher else "no",
                                              _csv_num(m.value), _csv_num(m.ci_low), _csv_num(m.ci_high),
                                              _csv_num(m.chance), _csv_num(m.value_range[0]),
                                              _csv_num(m.value_range[1]), rank] + tail)
        return out.getvalue()

    def build(self) -> list[Path]:
        self.copy_results()
        for task in self.tasks:
            self.task_page(task)
        for explainer in self.explainers:
            self.explainer_page(explainer)
        self.overview()
        self._write(CSV_FILE, self.metrics_csv())
        return self.written


CSV_COLUMNS = ("task", "explainer", "kind", "metric", "headline", "higher_is_better", "value", "ci_low", "ci_high",
               "chance", "range_low", "range_high", "rank_interval", "status", "replicates", "result_file")


def _csv_text(value: Any) -> str:
    """A name from a result file as a CSV cell: hidden characters removed, and a leading = + - @
    (which a spreadsheet would run as a formula) neutralised with a quote."""
    text = display_text(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def _csv_num(value: Any) -> str:
    return repr(float(value)) if isinstance(value, (int, float)) and math.isfinite(value) else ""


def _bias(r: JobResult, subject: str) -> float | None:
    truth = r.ground_truth.get(subject)
    if isinstance(truth, Mapping):
        for key in BIAS_KEYS:
            v = truth.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                return float(v)
    return None


def _targets(r: JobResult) -> tuple[dict[str, list[tuple[str, dict, list, int, str]]], str]:
    """subject -> [(target, weights, evidence, evidence total, kind)], and a note on the source."""
    out: dict[str, list] = {}
    if r.explanations:
        for subject, items in r.explanations.items():
            for item in items if isinstance(items, list) else []:
                if not isinstance(item, Mapping):
                    continue
                weights: dict[str, float] = {}
                for pair in item.get("concepts") or []:
                    if isinstance(pair, (list, tuple)) and len(pair) == 2 and isinstance(pair[1], (int, float)):
                        weights[str(pair[0])] = weights.get(str(pair[0]), 0.0) + float(pair[1])
                evidence = [str(e) for e in item.get("evidence") or []]
                out.setdefault(str(subject), []).append(
                    (str(item.get("name") or item.get("target") or item.get("index", "?")), weights, evidence,
                     int(item.get("evidence_total") or len(evidence)), str(item.get("kind", ""))))
        return out, ""
    for subject, row in r.per_subject.items():
        words = row.get("top_words") if isinstance(row, Mapping) else None
        if isinstance(words, list) and words and all(isinstance(w, list) for w in words):
            for i, ws in enumerate(words):
                out.setdefault(str(subject), []).append(
                    (f"target {i}", {str(w): 1.0 / (k + 1) for k, w in enumerate(ws)}, [], 0, ""))
    note = ("This result (schema {}) stores no explanations; the clouds show each target's top words from the "
            "per-subject numbers, sized by rank, not weight.".format(r.schema_version)) if out else \
        "This result stores no explanations to draw (written before results kept them)."
    return out, note


def choose_explanations(r: JobResult) -> tuple[list[tuple[str, str, dict, list, int]], str]:
    """The explanations an explainer's page shows for one task: the most and least biased subjects
    (by measured ground truth; by name when the task measures none), a few targets each, and a
    few units when the targets are units."""
    targets, note = _targets(r)
    if not targets:
        return [], note
    subjects = sorted(targets)
    biased = sorted((s for s in subjects if _bias(r, s) is not None), key=lambda s: _bias(r, s))
    picks = [biased[-1], biased[0]] if len(biased) >= 2 else [subjects[0], subjects[-1]]
    labels = {picks[0]: "most biased", picks[-1]: "least biased"} if len(biased) >= 2 else {}
    chosen, seen = [], set()
    for subject in dict.fromkeys(picks):
        items = targets[subject]
        units = [t for t in items if t[4] == "unit"]
        count = UNIT_CLOUDS if units and len(units) == len(items) else CLOUDS_PER_SUBJECT
        for target, weights, evidence, total, _ in items[:count]:
            if (subject, target) not in seen:
                seen.add((subject, target))
                name = f"{subject} ({labels[subject]})" if subject in labels else subject
                chosen.append((name, target, weights, evidence, total))
    return chosen, note


@dataclass
class Published:
    out: Path
    boards: int
    files: int
    warnings: list[str]


def publish(run_dirs: Sequence[str | Path], out: str | Path, prefer: str | Path | None = None,
            separate: bool = False, title: str = "fexbench leaderboard") -> Published:
    """Build the site into a fresh folder next to `out`, then swap it in: a reader (or a failed
    build) never sees half a site. An existing `out` is replaced only if it is a site (has the
    marker file) or empty."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).exists())):
        raise PublishError(f"{out}: exists and is not a fexbench site; refusing to overwrite it")
    boards, warnings = merge(run_dirs, prefer=prefer, separate=separate)
    out.parent.mkdir(parents=True, exist_ok=True)
    _sweep_stale(out)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        atomic_write_text(staging / MARKER, "a site written by `fexbench publish`; it may be replaced\n")
        atomic_write_text(staging / "assets/site.css", CSS.lstrip())
        atomic_write_text(staging / "assets/sort.js", SORT_JS.lstrip())
        atomic_write_text(staging / "assets/filter.js", FILTER_JS.lstrip())
        count = 4
        docs: set[tuple[str, str]] = set()
        first: BoardSite | None = None
        names = [f"board {i + 1}: " + ", ".join(map(str, b.runs)) for i, b in enumerate(boards)]
        for i, board in enumerate(boards):
            if i == 0:
                folder, up = staging, ""
                links = [(names[j], f"boards/{j + 1}/index.html", _differs(boards[0], boards[j]))
                         for j in range(1, len(boards))]
            else:
                folder, up = staging / "boards" / str(i + 1), "../../"
                links = [(names[0], "../../index.html", _differs(boards[0], board))]
            notes = [w for w in warnings if any(str(w).startswith(str(r)) for r in board.runs)]
            site = BoardSite(board, folder, up, title if i == 0 else f"{title} ({names[i]})", links, notes)
            count += len(site.build())
            atomic_write_json(folder / BOARD_FILE, board_data(site.results, site.rankings))
            count += 1
            docs |= site.docs
            first = first or site
        docs |= {("guide", g) for g in GUIDES}
        for kind, name in sorted(docs):
            source = doc_source(kind, name)
            if source is not None:
                atomic_write_text(staging / "docs" / f"{kind}s" / f"{slug(name)}.html", _doc_page(kind, name, source, title))
                count += 1
        atomic_write_text(staging / SUBMIT_PAGE, submission_page(title, first))
        count += 1
        _apply_umask(staging)
        _swap_in(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Published(out, len(boards), count, warnings)


STALE_S = 3600  # a staging or old folder this old is a killed publish's leftover, never a live one


def _sweep_stale(out: Path) -> None:
    """Remove what a killed publish left next to `out`: staging and old folders (hidden, named after
    `out`, holding the site marker), older than STALE_S so a concurrent publish keeps its own."""
    now = time.time()
    for left in out.parent.glob(f".{out.name}.*"):
        try:
            if left.is_dir() and not left.is_symlink() and now - left.stat().st_mtime > STALE_S \
                    and ((left / MARKER).exists() or not any(left.iterdir())):
                shutil.rmtree(left, ignore_errors=True)
        except OSError:
            continue


def _apply_umask(folder: Path) -> None:
    """mkdtemp makes the staging folder 0700; a published site gets the modes the umask gives."""
    mask = os.umask(0)
    os.umask(mask)
    for path in [folder, *folder.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o777 & ~mask)
        elif path.is_file() and not path.is_symlink():
            path.chmod(0o666 & ~mask)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2 RENAME_EXCHANGE); False where the
    system lacks it."""
    import ctypes
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _swap_in(staging: Path, out: Path) -> None:
    """Put the finished staging folder at `out`. Where the kernel can exchange two paths atomically,
    a reader sees the old site or the new one, never none; elsewhere the old site is moved aside
    first, and a kill between the two renames leaves it next to `out` (swept by the next publish)."""
    if out.exists() and _exchange(staging, out):
        shutil.rmtree(staging, ignore_errors=True)  # now the old site
        return
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{int(time.time() * 1000)}")
        out.rename(old)
    staging.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _doc_page(kind: str, name: str, source: Path, title: str) -> str:
    where = Page("../../", "../../")
    text = source.read_text(encoding="utf-8", errors="replace")
    rel = f"docs/{name}.md" if kind == "guide" else f"docs/{kind}s/{name}.md"
    return _page(f"{name}: documentation" if kind == "guide" else f"{kind} {name}: documentation", where, title,
                 el("p", "fexbench's documentation (", el("code", rel), "), copied into the site when it was built; "
                    "its links to other documents are shown as text.", class_="note"),
                 el("div", render_markdown(text), class_="doc"))


def _release_ids(site: "BoardSite | None") -> list[str]:
    """The release digests the board's results were run on (config.release.digest), if any."""
    found = set()
    for r in site.results if site is not None else ():
        release = r.config.get("release") if isinstance(r.config, Mapping) else None
        digest = release.get("digest") if isinstance(release, Mapping) else None
        if isinstance(digest, str) and digest:
            found.add(digest)
    return sorted(found)


def _guide(name: str) -> Html:
    """A link to one of fexbench's GUIDES copied into the site (from the site's root), or its name."""
    rel = f"docs/{name}.md"
    return el("a", rel, href=f"docs/guides/{name}.html") if doc_source("guide", name) else el("code", rel)


def submission_page(title: str, site: "BoardSite | None") -> str:
    """What an outside group sends, how it is verified, and how it appears."""
    where = Page("", "")
    releases = _release_ids(site)
    release_note = (el("p", "This board's results were run on the release ",
                       join(*[join(el("code", d), " ") for d in releases]),
                       "(the sha256 of its manifest). Run on the same release, or ask the maintainer which one to use.")
                    if releases else
                    el("p", "This board's results record no release: ask the maintainer for the release (its URL and "
                       "the sha256 of its manifest) that submissions must run on.", class_="note"))
    steps = el("ol",
               el("li", "Write the explainer as a subclass of ", el("code", "fexbench.Explainer"), " with its method "
                  "card (", el("code", "card = MethodCard(...)"), ": display name, a paragraph, paper, code link, "
                  "authors), package it so that it registers under the ", el("code", "fexbench.explainers"),
                  " entry point, and check it: ", el("code", "fexbench check-explainer your_pkg.module:YourExplainer"),
                  " passes every check and prints no card warning (", _guide("writing-an-explainer"), ")."),
               el("li", "Run it on the board's release, so that your subjects, data and ground truth are the board's "
                  "(checked by hash): ", el("code", "fexbench run --release RELEASE --explainers your-explainer"),
                  " (", _guide("release"), "). Do not edit the files it writes; ",
                  el("code", "fexbench validate RUN_DIR"), " must pass."))
    send = el("ul",
              el("li", el("strong", "The release id"), ": the sha256 of the release manifest you ran on (every result "
                 "file records it in ", el("code", "config.release.digest"), ")."),
              el("li", el("strong", "The results folder"), " as ", el("code", "fexbench run"), " wrote it: one ",
                 el("code", "<task>/<explainer>.json"), " per task, with ", el("code", "run-config.json"), ", ",
                 el("code", "summary.md"), " and ", el("code", "environment.json"), "."),
              el("li", el("strong", "The code"), ": a pip-installable package, or a public repository at a pinned "
                 "commit, that registers the explainer and declares its method card; the version in the card is "
                 "the one in the results' job keys."),
              el("li", el("strong", "The lock file"), ": ", el("code", "environment.lock"), " from the results "
                 "folder (every installed package, pinned), so that the maintainer re-runs in the same "
                 "environment."))
    verify = el("ul",
                el("li", "Nothing that ranks comes from your files: metric directions, ranges, headline metrics and "
                   "each explainer's role (method, control, oracle) come from the registered task and explainer "
                   "code; a result scored against other ground truth (task version, data or weights hashes) does "
                   "not merge into the board."),
                el("li", "The maintainer installs your code in the locked environment and re-runs the method on the "
                   "board's release with a private seed you never saw, the held-out test of this benchmark: ",
                   el("code", "fexbench verify SUBMISSION --explainer PACKAGE_OR_MODULE --secret-seed-file F"),
                   ". It compares the private-seed scores with your public-seed scores (paired where it can, "
                   "otherwise within their intervals) and gives a verdict (", _guide("publishing"), ")."),
                el("li", "A submission that passes is merged with ", el("code", "fexbench publish BOARD SUBMISSION"),
                   " and its rows are marked verified; one that fails is not published, and you are told which "
                   "task and metric disagreed."))
    appears = el("ul",
                 el("li", "A row on the overview (its headline value, 95% CI and rank interval among the compared "
                    "methods, and the controls it significantly beats), a row on each task's page with every metric, "
                    "and a page of its own with its method card (paper, code, authors, version), word clouds of its "
                    "explanations and its cost."),
                 el("li", "A verified mark on the rows the private-seed check confirmed."),
                 el("li", "Its result files, byte for byte, in the site's ", el("code", "results/"), " folder and in ",
                    el("code", CSV_FILE), " and ", el("code", BOARD_FILE), "."))
    return _page("Submitting a method", where, title,
                 el("p", "This board takes methods from other groups. A row goes up after the maintainer has re-run "
                    "the method on a private seed; the numbers it shows are computed by fexbench from the results, "
                    "with the roles and directions of the registered code.", class_="note"),
                 el("h2", "Before you send it", id="prepare"), steps, release_note,
                 el("h2", "What to send", id="send"), send,
                 el("h2", "How it is verified", id="verify"), verify,
                 el("h2", "How it appears", id="appears"), appears)


def _differs(a: Board, b: Board) -> str:
    for task, entry in b.reference.items():
        mine = a.reference.get(task)
        if mine is not None and ground_truth_identity(mine.result) != ground_truth_identity(entry.result):
            from fexbench.analysis.comparisons import differing_ground_truth

            diff = differing_ground_truth(mine.result, entry.result)
            return f"{task}: " + "; ".join(diff[:2]) + (f" (and {len(diff) - 2} more)" if len(diff) > 2 else "")
    return "other ground truth"
