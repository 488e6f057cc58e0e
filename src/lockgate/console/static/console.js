// lockgate console: draws the overview charts with uPlot from the JSON the page carries,
// and sends the session's CSRF token with every htmx request. No inline script anywhere.
(function () {
  "use strict";
  document.addEventListener("htmx:configRequest", function (ev) {
    var token = document.body.getAttribute("data-csrf");
    if (token) { ev.detail.headers["X-CSRF-Token"] = token; }
  });
  function draw() {
    var node = document.getElementById("overview-series");
    if (!node || typeof uPlot === "undefined") { return; }
    var data = JSON.parse(node.textContent);
    var colours = ["#0b5cad", "#a4161a", "#2b8a3e"];
    document.querySelectorAll(".chart[data-series]").forEach(function (el) {
      var names = el.getAttribute("data-series").split(",");
      var labels = el.getAttribute("data-label").split(",");
      var series = [{}];
      var cols = [data.t];
      names.forEach(function (name, i) {
        series.push({ label: labels[i] || name, stroke: colours[i % colours.length], width: 2,
                      spanGaps: false, points: { show: data.t.length < 80 } });
        cols.push(data[name]);
      });
      var width = Math.max(320, el.clientWidth || 560);
      el.setAttribute("data-points", String(data.t.length));
      var fmt = function (u, vals) {
        return vals.map(function (v) {
          if (v === null || v === undefined) { return ""; }
          return Math.abs(v) >= 100 || v === 0 ? String(Math.round(v)) : String(+v.toPrecision(2));
        });
      };
      new uPlot({ width: width, height: 200, series: series,
                  axes: [{}, { size: 60, values: fmt }], scales: { x: { time: true } } }, cols, el);
      el.setAttribute("data-drawn", "1");
    });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else { draw(); }
})();
