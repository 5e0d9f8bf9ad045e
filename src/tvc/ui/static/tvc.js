// tvc web UI: small additions to pages that work without script. Sorting tables, a live
// tensor filter, the copy button, metric checkboxes that apply at once. Written for tvc
// (Apache-2.0, as the rest of tvc); no third-party code.
"use strict";
(function () {
  function cellValue(td) {
    var s = td.getAttribute("data-sort");
    if (s === null) s = td.textContent.trim();
    var n = parseFloat(s.replace(/,/g, ""));
    return isNaN(n) || !/^[-+]?[\d.,]+(e[-+]?\d+)?%?$/i.test(s.replace(/\s.*$/, "")) ? s.toLowerCase() : n;
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    table.querySelectorAll("thead th").forEach(function (th, col) {
      th.addEventListener("click", function () {
        var asc = th.getAttribute("aria-sort") !== "ascending";
        table.querySelectorAll("thead th").forEach(function (o) { o.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", asc ? "ascending" : "descending");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = cellValue(a.cells[col]), y = cellValue(b.cells[col]);
          var c = typeof x === typeof y ? (x < y ? -1 : x > y ? 1 : 0) : (typeof x === "number" ? -1 : 1);
          return asc ? c : -c;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });
  document.querySelectorAll("input[data-filter]").forEach(function (input) {
    var table = document.querySelector(input.getAttribute("data-filter"));
    input.addEventListener("input", function () {
      var q = input.value.trim().toLowerCase();
      Array.prototype.forEach.call(table.tBodies[0].rows, function (r) {
        r.hidden = q !== "" && r.cells[0].textContent.toLowerCase().indexOf(q) < 0;
      });
    });
  });
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () {
      var text = document.querySelector(button.getAttribute("data-copy")).textContent;
      var done = function () { button.textContent = "Copied"; };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done);
      } else {
        var area = document.createElement("textarea");
        area.value = text; document.body.appendChild(area); area.select();
        document.execCommand("copy"); document.body.removeChild(area); done();
      }
    });
  });
  document.querySelectorAll("form.metric-pick input[type=checkbox]").forEach(function (box) {
    box.addEventListener("change", function () { box.form.submit(); });
  });
})();
