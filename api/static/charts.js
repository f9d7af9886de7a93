// Hashrate charts of the miner and operator pages (uPlot, vendored at build time).
// The data is the JSON block #chart-data that the server rendered into the page; every figure
// is also in the page's tables, so nothing is lost without JavaScript.
(function () {
  "use strict";
  var el = document.getElementById("chart");
  var src = document.getElementById("chart-data");
  if (!el || !src || typeof uPlot === "undefined") return;
  var data = JSON.parse(src.textContent);
  var times = data.total.map(function (p) { return p[0] / 1000; });
  var series = [{}, { label: "total", stroke: "#f7931a", width: 2, fill: "rgba(247,147,26,0.08)" }];
  var columns = [times, data.total.map(function (p) { return p[1]; })];
  var palette = ["#2f6fde", "#2aa876", "#b04bd1", "#d1424b", "#7a7a7a", "#2fb5c4"];
  Object.keys(data.workers).sort().forEach(function (name, i) {
    var at = {};
    data.workers[name].forEach(function (p) { at[p[0] / 1000] = p[1]; });
    columns.push(times.map(function (t) { return at[t] === undefined ? 0 : at[t]; }));
    series.push({ label: name, stroke: palette[i % palette.length], width: 1 });
  });
  function si(v) {
    var units = ["H/s", "kH/s", "MH/s", "GH/s", "TH/s", "PH/s", "EH/s"];
    var i = 0;
    while (Math.abs(v) >= 1000 && i < units.length - 1) { v /= 1000; i++; }
    return (Math.round(v * 100) / 100) + " " + units[i];
  }
  var opts = {
    width: Math.max(el.clientWidth, 320), height: 260,
    series: series,
    scales: { x: { time: true } },
    axes: [{}, { values: function (u, ticks) { return ticks.map(si); }, size: 80 }],
    legend: { live: true },
  };
  el.textContent = "";
  var plot = new uPlot(opts, columns, el);
  el.setAttribute("data-drawn", String(columns.length - 1));
  window.addEventListener("resize", function () {
    plot.setSize({ width: Math.max(el.clientWidth, 320), height: 260 });
  });
})();
