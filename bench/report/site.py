"""The static leaderboard site: an overview, a page per task and per explainer, from result files.

The site opens from disk (file://), offline: pages link only to files inside the site (its own
CSS and script, SVG and PNG pictures, copies of the result files). Every value from a result file
reaches a page through `markup.el`, which escapes it. A board whose ground truth differs from the
first is published under boards/<n>/ and linked from the overview.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from fexbench.core.cache import atomic_write_json, atomic_write_text
from fexbench.analysis.board import BOARD_FILE, board as board_data
from fexbench.core.metrics import MetricValue
from fexbench.core.results import SCHEMA_VERSION, JobResult
from fexbench.analysis.comparisons import TaskRanking, ground_truth_identity, rank_all, role
from fexbench.analysis.power import design_note
from fexbench.report import plots
from fexbench.report.assets import CSS, SORT_JS
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
              el("script", src=f"{where.site}assets/sort.js", defer=True))
    nav = el("header", el("a", el("strong", board_title), href=f"{where.up}index.html"),
             el("a", "overview", href=f"{where.up}index.html"), class_="site")
    foot = el("footer", el("p", f"Generated by fexbench (results schema {SCHEMA_VERSION}) on "
                           f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", class_="note"))
    return "<!DOCTYPE html>\n" + el("html", head, el("body", nav, el("main", el("h1", title), *body), foot), lang="en")


def _table(headers: Sequence[Any], rows: Iterable[Sequence[Any]], sortable: bool = True, **attrs) -> Html:
    head = el("thead", el("tr", *[h if isinstance(h, Html) and h.startswith("<th") else el("th", h)
                                  for h in headers]))
    return el("table", head, el("tbody", *[el("tr", *[c if isinstance(c, Html) and c.startswith("<td") else
                                                      el("td", c) for c in row]) for row in rows]),
              class_="sortable" if sortable else None, **attrs)


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
        return join(el("a", explainer, href=up + self.explainer_href(explainer)),
                    el("span", kind, class_=f"badge {kind}") if kind != "method" else None)

    def intervals(self, task: str, metric: str) -> list[Interval]:
        ranking = self.rankings.get(task)
        rows = []
        for explainer in self.explainers:
            r = self.result(task, explainer)
            if r is None or r.status != "ok":
                continue
            m = next((m for m in r.metrics if m.name == metric), None)
            if m is not None:
                rows.append(Interval(explainer, m, _rank(explainer, ranking)))
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
                              class_="num", data_task=task))
        rows = []
        for explainer in self.explainers:
            row: list[Any] = [el("td", self._name(explainer, ""), data_sort=explainer, class_="explainer")]
            for task in self.tasks:
                row.append(self._overview_cell(task, explainer))
            rows.append(row)
        figures = [el("figure", intervals_svg(self.intervals(t, self.headline(t)), f"{t}: {self.headline(t)}"),
                      el("figcaption", el("a", t, href=self.task_href(t)),
                         f": {self.headline(t)} per explainer, point estimate and 95% CI; colour is the rank group "
                         "(grey: not ranked), the dashed line chance."))
                   for t in self.tasks if self.headline(t) and self.intervals(t, self.headline(t))]
        intro = el("p", "Each cell is a task's headline (first) metric: the point estimate, its 95% CI, and a "
                   "compared method's rank interval among the compared methods: [1 + methods significantly better, "
                   "M - methods significantly worse] (paired tests over the same units and replicates, Holm within "
                   "the compared methods). A wide interval means the data cannot place the method more precisely, "
                   "not a shared first place; 'beats' names the controls it significantly beats. Controls and the "
                   "oracle (the ceiling) are marked and get no rank. "
                   "Click a column header to sort. Each task's page has every metric, their definitions, and the "
                   "scatter behind the ranking; each explainer's page its words and its cost.", class_="note")
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
        body = [intro, runs,
                _table(headers, rows, id="overview"),
                el("section", el("h2", "Confidence intervals"), *figures),
                el("section", el("h2", "Not ranked"), el("ul", *excluded)) if excluded else None,
                *others, *notes]
        self._write("index.html", _page("Overview", where, self.title, *body))

    def _arrow(self, task: str, metric: str | None) -> str:
        for r in self.results:
            if r.task == task:
                for m in r.metrics:
                    if m.name == metric:
                        return "↑ higher is better" if m.higher_is_better else "↓ lower is better"
        return ""

    def _overview_cell(self, task: str, explainer: str) -> Html:
        r = self.result(task, explainer)
        if r is None:
            return el("td", "", data_sort="")
        metric = self.headline(task)
        m = next((m for m in r.metrics if m.name == metric), None) if r.status == "ok" else None
        json_link = el("a", "json", href=self.json_href(task, explainer), class_="note",
                       title=f"job {r.job_key}, {r.created}")
        if m is None:
            return el("td", el("span", r.status, class_=f"status-{r.status}"), " ", json_link, data_sort="")
        rank = _rank(explainer, self.rankings.get(task))
        return el("td", el("a", _num(m.value), href=self.task_href(task)), " ", el("span", _ci(m), class_="ci"),
                  el("span", rank, class_="rank", title="rank group"), " ", json_link,
                  data_sort=repr(m.value) if math.isfinite(m.value) else "", class_="num")

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
        headers: list[Any] = [el("th", "rank"), el("th", "explainer")]
        for name, m in metrics.items():
            headers.append(el("th", name, " ", "↑" if m.higher_is_better else "↓", " ",
                              el("a", "def", href=f"#metric-{slug(name)}", class_="note",
                                 title="definition of this metric"), class_="num"))
        headers += [el("th", "replicates", class_="num"), el("th", "seeds", class_="num"),
                    el("th", "fit + explain s", class_="num"), el("th", "peak MB", class_="num"),
                    el("th", "status"), el("th", "provenance")]

        def rank_key(r):
            return (r.status != "ok", _rank_order(r.explainer, ranking), r.explainer)

        rows = []
        for r in sorted(rows_results, key=rank_key):
            rank = _rank(r.explainer, ranking)
            values = {m.name: m for m in r.metrics}
            row: list[Any] = [el("td", rank, data_sort=_rank_sort(r.explainer, ranking)),
                              el("td", self._name(r.explainer, "../"), data_sort=r.explainer)]
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
                         ": point estimate and 95% CI per explainer; colour is the rank group on the headline metric "
                         "(grey: not ranked), the dashed line chance."))
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
                   _kv([("direction", "higher is better" if m.higher_is_better else "lower is better"),
                        ("range", f"[{_num(m.value_range[0], 2)}, {_num(m.value_range[1], 2)}]"),
                        ("chance", _num(m.chance) if m.chance is not None else "not defined"),
                        ("category", m.category),
                        ("headline", "yes: the overview and the rank groups use it"
                         if name == self.headline(task) else "no")]))))
        body = [el("p", description or "", class_="note") if description else None,
                el("p", "Rank groups are on the headline metric ", el("code", self.headline(task) or "-"),
                   ". Full definitions: the ", el("a", "definitions section", href="#definitions"),
                   " below, and docs/tasks/", task, ".md in the fexbench repository.", class_="note"),
                _table(headers, rows, id="task-table"),
                el("p", "Not ranked: ", _excluded(task, ranking), class_="note") if excluded else None,
                el("p", note, class_="note") if (note := design_note(rows_results)) else None,
                el("section", el("h2", "Confidence intervals"), *figures),
                el("section", el("h2", "Why the ranking: explanation against measured ground truth"), *scatter),
                el("section", el("h2", "Definitions", id="definitions"), el("dl", *definitions, class_="defs"))]
        self._write(self.task_href(task), _page(task, where, self.title, *body))

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
        self.written.append(plots.scatter_svg(self.out / f"img/scatter-{slug(task)}.svg", panels, spec))
        return [el("figure", el("img", src=f"../img/scatter-{slug(task)}.svg",
                                alt=f"{spec.score} against {spec.truth} per explainer"),
                   el("figcaption", "One panel per explainer: each point a subject (or a class of a subject), its "
                      "explanation's ", el("code", spec.score), " against the measured ", el("code", spec.truth),
                      "; one colour per replicate; ρ is the Spearman correlation of the points. A method ranks high "
                      "when its points rise together."))]

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
                  _kv(pairs), el("p", "config:"), el("pre", config[:4000]))

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
        description = _explainer_info(explainer)
        body = [el("p", description, class_="note") if description else None,
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

    def build(self) -> list[Path]:
        self.copy_results()
        for task in self.tasks:
            self.task_page(task)
        for explainer in self.explainers:
            self.explainer_page(explainer)
        self.overview()
        return self.written


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
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        atomic_write_text(staging / MARKER, "a site written by `fexbench publish`; it may be replaced\n")
        atomic_write_text(staging / "assets/site.css", CSS.lstrip())
        atomic_write_text(staging / "assets/sort.js", SORT_JS.lstrip())
        count = 3
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
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{int(time.time() * 1000)}")
            out.rename(old)
        staging.rename(out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Published(out, len(boards), count, warnings)


def _differs(a: Board, b: Board) -> str:
    for task, entry in b.reference.items():
        mine = a.reference.get(task)
        if mine is not None and ground_truth_identity(mine.result) != ground_truth_identity(entry.result):
            from fexbench.analysis.comparisons import differing_ground_truth

            diff = differing_ground_truth(mine.result, entry.result)
            return f"{task}: " + "; ".join(diff[:2]) + (f" (and {len(diff) - 2} more)" if len(diff) > 2 else "")
    return "other ground truth"
