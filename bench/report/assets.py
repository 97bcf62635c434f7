"""The site's own stylesheet and scripts, written next to the pages (no CDN: the site opens offline).

The scripts only sort and filter tables: they read cells' `data-sort`, `data-kind` and `data-task`
attributes or textContent, move row elements and set `hidden`; they never write HTML (no
innerHTML), so no value from a result file is ever parsed as markup. Both are files of the site
(`script-src 'self'` in the pages' Content-Security-Policy allows nothing inline).

Sorting: the first click on a column sorts it best-first, in the order its header's `data-order`
states ("desc" for a higher-is-better metric, "asc" for lower-is-better, names and ranks); the
next click reverses it.
"""

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #222; }
header.site { background: #243447; color: #fff; padding: 0.6em 1.2em; display: flex; flex-wrap: wrap; gap: 0.3em 1.2em; }
header.site a { color: #fff; text-decoration: none; }
main { padding: 0.5em 1.2em 2em; max-width: 1300px; }
a.external::after { content: " \\2197"; font-size: 0.85em; }
code { overflow-wrap: anywhere; }
.scroller { overflow-x: auto; max-width: 100%; margin: 0.8em 0; }
.scroller > table { margin: 0; }
table { border-collapse: separate; border-spacing: 0; margin: 0.8em 0; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; background: #fff; }
th { background: #f3f5f7; }
.scroller th:first-child, .scroller td:first-child { position: sticky; left: 0; z-index: 1;
  box-shadow: 1px 0 0 #ddd; }
.scroller th:first-child { z-index: 2; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th[aria-sort="ascending"]::after { content: " \\25B2"; }
table.sortable th[aria-sort="descending"]::after { content: " \\25BC"; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.explainer { white-space: nowrap; }
tr[hidden], th[hidden], td[hidden], figure[hidden] { display: none; }
.ci { color: #666; font-size: 0.9em; }
.rank { display: inline-block; min-width: 1.8em; padding: 0 4px; margin-left: 4px; border-radius: 3px;
        background: #e0ecdf; font-size: 0.85em; text-align: center; }
.badge { border-radius: 3px; padding: 0 4px; font-size: 0.8em; margin-left: 4px; white-space: nowrap; }
.badge.control { background: #e6e6e6; color: #333; border: 1px solid #969696; }
.badge.oracle { background: #fbe7c6; color: #5c3d00; border: 1px solid #b8860b; }
.badge.method { background: #deebf7; color: #08306b; border: 1px solid #6baed6; }
.status-error, .status-skipped { color: #a00; }
.note { color: #555; font-size: 0.92em; }
form.filters { display: flex; flex-wrap: wrap; gap: 0.4em 1.2em; align-items: center; padding: 0.4em 0.6em;
               background: #f7f9fb; border: 1px solid #e3e7eb; border-radius: 4px; margin: 0.6em 0; }
form.filters[hidden] { display: none; }
form.filters fieldset { border: 0; padding: 0; margin: 0; display: flex; flex-wrap: wrap; gap: 0.2em 0.8em; }
form.filters legend { float: left; margin-right: 0.5em; font-weight: 600; }
figure { margin: 1em 0; display: inline-block; vertical-align: top; max-width: 100%; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
svg.intervals { max-width: 100%; height: auto; }
figcaption { font-size: 0.9em; color: #555; max-width: 640px; }
details pre, pre { white-space: pre-wrap; word-break: break-word; background: #f7f7f7; padding: 6px;
                   max-height: 20em; overflow: auto; font-size: 0.85em; }
.doc pre { max-height: none; }
dl.defs dt { font-weight: 600; margin-top: 0.8em; }
dl.kv { display: grid; grid-template-columns: max-content auto; gap: 2px 10px; font-size: 0.85em; }
dl.kv dt { color: #555; }
dl.kv dd { margin: 0; word-break: break-all; }
dl.card { display: grid; grid-template-columns: max-content minmax(0, 1fr); gap: 4px 12px; }
dl.card dt { color: #555; }
dl.card dd { margin: 0; overflow-wrap: anywhere; }
.clouds figure { width: 330px; }
ul.evidence { font-size: 0.9em; color: #333; }
@media (max-width: 600px) {
  main { padding: 0.4em 0.6em 1.5em; }
  header.site { padding: 0.5em 0.6em; }
  dl.card { grid-template-columns: minmax(0, 1fr); }
  dl.card dd { margin-bottom: 0.4em; }
  .clouds figure { width: 100%; }
}
"""

SORT_JS = """
"use strict";
(function () {
  function key(cell) {
    var v = cell.getAttribute("data-sort");
    if (v === null) { v = cell.textContent.trim(); }
    var n = parseFloat(v);
    if (v !== "" && isFinite(n) && String(n) === String(Number(v))) { return {kind: 0, v: n}; }
    if (v === "") { return {kind: 2, v: ""}; }
    return {kind: 1, v: v.toLowerCase()};
  }
  function compare(a, b, asc) {
    if (a.kind !== b.kind) { return a.kind - b.kind; }  // numbers, then text, then empty cells
    if (a.v === b.v) { return 0; }
    var order = a.v < b.v ? -1 : 1;
    return asc ? order : -order;
  }
  function sortBy(table, col, th, toggle) {
    var first = th.getAttribute("data-order") === "desc" ? "descending" : "ascending";
    var current = th.getAttribute("aria-sort");
    var next = (toggle && current === first) ? (first === "ascending" ? "descending" : "ascending") : first;
    var asc = next === "ascending";
    var heads = table.tHead.rows[0].cells;
    for (var i = 0; i < heads.length; i++) { heads[i].setAttribute("aria-sort", "none"); }
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.forEach(function (row, index) { row.setAttribute("data-index", String(index)); });
    rows.sort(function (r, s) {
      var c = compare(key(r.cells[col]), key(s.cells[col]), asc);
      return c !== 0 ? c : Number(r.getAttribute("data-index")) - Number(s.getAttribute("data-index"));
    });
    rows.forEach(function (row) { body.appendChild(row); });
    th.setAttribute("aria-sort", next);
  }
  document.addEventListener("DOMContentLoaded", function () {
    var tables = document.querySelectorAll("table.sortable");
    Array.prototype.forEach.call(tables, function (table) {
      if (!table.tHead || !table.tBodies.length) { return; }
      var heads = table.tHead.rows[0].cells;
      Array.prototype.forEach.call(heads, function (th, col) {
        th.tabIndex = 0;
        th.setAttribute("aria-sort", "none");
        th.title = "sort by this column (first click: best first; again: reversed)";
        th.addEventListener("click", function (event) {
          if (event.target.closest && event.target.closest("a")) { return; }  // a definition link
          sortBy(table, col, th, true);
        });
        th.addEventListener("keydown", function (event) {
          if (event.key === "Enter" || event.key === " ") { event.preventDefault(); sortBy(table, col, th, true); }
        });
      });
    });
  });
})();
"""

FILTER_JS = """
"use strict";
(function () {
  // A form.filters[data-table=ID] filters the rows of table#ID: kind checkboxes hide rows whose
  // data-kind is unchecked; the task select hides other tasks' columns (cells with data-task),
  // the rows with no result on the chosen task (data-empty), and figures of other tasks.
  function apply(form) {
    var table = document.getElementById(form.getAttribute("data-table"));
    if (!table || !table.tHead || !table.tBodies.length) { return; }
    var kinds = {};
    Array.prototype.forEach.call(form.querySelectorAll("input[data-filter=kind]"), function (box) {
      kinds[box.value] = box.checked;
    });
    var select = form.querySelector("select[data-filter=task]");
    var task = select ? select.value : "";
    function other(cell) {
      return task !== "" && cell.hasAttribute("data-task") && cell.getAttribute("data-task") !== task;
    }
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) { th.hidden = other(th); });
    var shown = 0, total = 0;
    Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
      total += 1;
      var kind = row.getAttribute("data-kind") || "method";
      var hide = Object.prototype.hasOwnProperty.call(kinds, kind) && !kinds[kind];
      Array.prototype.forEach.call(row.cells, function (cell) {
        cell.hidden = other(cell);
        if (task !== "" && !cell.hidden && cell.hasAttribute("data-task") && cell.hasAttribute("data-empty")) {
          hide = true;
        }
      });
      row.hidden = hide;
      if (!hide) { shown += 1; }
    });
    Array.prototype.forEach.call(document.querySelectorAll("figure[data-task]"), function (figure) {
      figure.hidden = other(figure);
    });
    var count = form.querySelector(".filter-count");
    if (count) { count.textContent = shown + " of " + total + " rows shown"; }
  }
  document.addEventListener("DOMContentLoaded", function () {
    Array.prototype.forEach.call(document.querySelectorAll("form.filters"), function (form) {
      form.hidden = false;  // without this script the form would do nothing, so it stays hidden
      form.addEventListener("change", function () { apply(form); });
      form.addEventListener("submit", function (event) { event.preventDefault(); });
      apply(form);
    });
  });
})();
"""
