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
