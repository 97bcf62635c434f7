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
