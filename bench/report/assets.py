"""The site's own stylesheet and script, written next to the pages (no CDN: the site opens offline).

The script only sorts tables: it reads cells' `data-sort` or textContent and moves row elements;
it never writes HTML (no innerHTML), so no value from a result file is ever parsed as markup.
"""

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #222; }
header.site { background: #243447; color: #fff; padding: 0.6em 1.2em; }
header.site a { color: #fff; margin-right: 1.2em; text-decoration: none; }
main { padding: 0.5em 1.2em 2em; max-width: 1300px; }
table { border-collapse: collapse; margin: 0.8em 0; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f3f5f7; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th[aria-sort="ascending"]::after { content: " \\25B2"; }
table.sortable th[aria-sort="descending"]::after { content: " \\25BC"; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.ci { color: #666; font-size: 0.9em; }
.rank { display: inline-block; min-width: 1.8em; padding: 0 4px; margin-left: 4px; border-radius: 3px;
        background: #e0ecdf; font-size: 0.85em; text-align: center; }
.badge { background: #fbe7c6; border-radius: 3px; padding: 0 4px; font-size: 0.8em; margin-left: 4px; }
.status-error, .status-skipped { color: #a00; }
.note { color: #555; font-size: 0.92em; }
figure { margin: 1em 0; display: inline-block; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #555; max-width: 640px; }
details pre, pre { white-space: pre-wrap; word-break: break-word; background: #f7f7f7; padding: 6px;
                   max-height: 20em; overflow: auto; font-size: 0.85em; }
dl.defs dt { font-weight: 600; margin-top: 0.8em; }
dl.kv { display: grid; grid-template-columns: max-content auto; gap: 2px 10px; font-size: 0.85em; }
dl.kv dt { color: #555; }
dl.kv dd { margin: 0; word-break: break-all; }
.clouds figure { width: 330px; }
ul.evidence { font-size: 0.9em; color: #333; }
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
  function sortBy(table, col, th) {
    var asc = th.getAttribute("aria-sort") !== "ascending";
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
    th.setAttribute("aria-sort", asc ? "ascending" : "descending");
  }
  document.addEventListener("DOMContentLoaded", function () {
    var tables = document.querySelectorAll("table.sortable");
    Array.prototype.forEach.call(tables, function (table) {
      if (!table.tHead || !table.tBodies.length) { return; }
      var heads = table.tHead.rows[0].cells;
      Array.prototype.forEach.call(heads, function (th, col) {
        th.tabIndex = 0;
        th.setAttribute("aria-sort", "none");
        th.title = "sort by this column";
        th.addEventListener("click", function (event) {
          if (event.target.closest && event.target.closest("a")) { return; }  // a definition link
          sortBy(table, col, th);
        });
        th.addEventListener("keydown", function (event) {
          if (event.key === "Enter" || event.key === " ") { event.preventDefault(); sortBy(table, col, th); }
        });
      });
    });
  });
})();
"""
