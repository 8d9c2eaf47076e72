// Draws every <canvas data-chart="ID"> from the page's JSON chart configs (built server-side in views.py).
(function () {
  "use strict";
  const palette = ["#1f6feb", "#d9480f", "#2f9e44", "#9c36b5", "#e8590c", "#0c8599", "#c2255c", "#5c940d"];
  const configs = JSON.parse(document.getElementById("charts").textContent || "{}");
  const percent = (value) => (value * 100).toFixed(0) + "%";

  for (const canvas of document.querySelectorAll("canvas[data-chart]")) {
    const spec = configs[canvas.dataset.chart];
    if (!spec) continue;
    spec.data.datasets.forEach((dataset, i) => {
      const color = palette[i % palette.length];
      dataset.borderColor ??= color; // a dataset that brings its own colours (an interval's estimate) keeps them
      dataset.backgroundColor ??= spec.type === "line" ? color : color + "99";
      dataset.spanGaps = true;
      dataset.pointRadius ??= spec.type === "scatter" ? 3 : 2; // an interval's estimate sets its own
    });
    const yTicks = spec.percent ? { callback: percent } : {};
    // Rates live in [0, 1]; counts and latencies start at zero; only rewards (and scatter axes) go negative.
    const yScale = spec.percent ? { min: 0, suggestedMax: 1, ticks: yTicks } : { beginAtZero: !spec.signed };
    const options = {
      animation: false, // charts are final on first paint: screenshots and tests see the data at once
      responsive: true,
      maintainAspectRatio: false,
      indexAxis: spec.horizontal ? "y" : "x",
      plugins: { legend: { position: "bottom" } },
      scales: spec.horizontal ? { x: { ticks: yTicks } } : { y: yScale },
    };
    new Chart(canvas, { type: spec.type, data: spec.data, options: options });
  }
})();
