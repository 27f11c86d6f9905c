/* The "Flex" page: what flex cost and saved, night after night, per DAG. */
"use strict";

(() => {
  let runs = [];

  function enc(value) {
    return encodeURIComponent(value);
  }

  /** The Airflow UI's page of a task instance's Flex tab (relative: works under a base path). */
  function tabUrl(run) {
    const mapped = run.map_index >= 0 ? `/mapped/${run.map_index}` : "";
    return `../../dags/${enc(run.dag_id)}/runs/${enc(run.run_id)}/tasks/${enc(run.task_id)}${mapped}/plugin/flex`;
  }

  function filtered() {
    const dag = document.getElementById("flex-dag-filter").value;
    return dag ? runs.filter((r) => r.dag_id === dag) : runs;
  }

  function renderTotals(rows) {
    const sum = (key) => rows.reduce((acc, r) => acc + (r.cost[key] || 0), 0);
    for (const [id, value] of [
      ["flex-total-spent", sum("actual")],
      ["flex-total-standard", sum("standard_equivalent")],
      ["flex-total-saved", sum("saved")],
    ]) {
      const node = document.getElementById(id);
      node.dataset.value = String(Math.round(value * 1e6) / 1e6);
      node.textContent = Flex.fmtUsd(value);
    }
    const saved = document.getElementById("flex-total-saved");
    const pct = Flex.fmtPct(sum("saved"), sum("standard_equivalent"));
    if (pct) saved.textContent += ` (${pct})`;
    const items = rows.reduce((acc, r) => acc + r.items, 0);
    // A run on a model without a price has an unknown cost: left out of the sums, and said so.
    const unknown = rows.filter((r) => typeof r.cost.actual !== "number").length;
    const note = unknown ? ` (${Flex.fmtInt(unknown)} of unknown cost not counted)` : "";
    const node = Flex.setText("flex-total-runs", `${Flex.fmtInt(rows.length)} runs · ${Flex.fmtInt(items)} items${note}`);
    node.dataset.value = String(rows.length);
    node.dataset.unknownCost = String(unknown);
  }

  /** One bar per (night, DAG): its height is the standard-tier price, the dark part the flex spend. */
  function renderChart(rows) {
    const svg = document.getElementById("flex-chart-savings");
    const legend = document.getElementById("flex-legend-savings");
    Flex.clear(svg);
    legend.replaceChildren();
    if (!rows.length) {
      Flex.placeholder(svg, "No finished flex run yet");
      return;
    }
    const bars = new Map();
    for (const r of rows) {
      const night = Flex.localDay(r.date || r.finished_at);
      const key = `${night}\u0000${r.dag_id}`;
      const bar = bars.get(key) || { night, dag_id: r.dag_id, spent: 0, standard: 0, saved: 0, runs: 0 };
      bar.spent += r.cost.actual || 0;
      bar.standard += r.cost.standard_equivalent || 0;
      bar.saved += r.cost.saved || 0;
      bar.runs += 1;
      bars.set(key, bar);
    }
    const nights = [...new Set([...bars.values()].map((b) => b.night))].sort();
    const dags = [...new Set([...bars.values()].map((b) => b.dag_id))].sort();
    const { width, height } = Flex.size(svg);
    const P = Flex.PAD;
    const scale = Flex.niceScale(Math.max(...[...bars.values()].map((b) => Math.max(b.standard, b.spent))), false);
    const max = scale.max;
    Flex.yAxis(svg, width, height, scale, Flex.fmtUsd);
    const plotW = width - P.left - P.right;
    const plotH = height - P.top - P.bottom;
    const groupW = plotW / nights.length;
    const barW = Math.max(2, Math.min(48, (groupW * 0.8) / dags.length));
    const y = (v) => height - P.bottom - (plotH * v) / max;
    const labelEvery = Math.ceil(nights.length / Math.max(1, Math.floor(plotW / 80)));
    nights.forEach((night, i) => {
      const x0 = P.left + i * groupW + (groupW - barW * dags.length) / 2;
      if (i % labelEvery === 0) {
        svg.append(Flex.svgEl("text", { x: P.left + (i + 0.5) * groupW, y: height - 6, class: "tick", "text-anchor": "middle" }, night));
      }
      dags.forEach((dag, j) => {
        const bar = bars.get(`${night}\u0000${dag}`);
        if (!bar) return;
        const x = x0 + j * barW;
        const top = Math.max(bar.standard, bar.spent);
        const g = Flex.svgEl("g", { class: `bar-group dag-${dags.indexOf(dag) % 8}` });
        const full = Flex.svgEl("rect", {
          class: "bar", x: x + 1, width: barW - 2, y: y(top), height: Math.max(0, y(0) - y(top)),
          "data-night": night, "data-dag-id": dag, "data-spent": bar.spent.toFixed(6), "data-saved": bar.saved.toFixed(6),
          "data-standard": bar.standard.toFixed(6), "data-runs": bar.runs,
        });
        full.append(Flex.svgEl("title", {}, `${night} · ${dag}: spent ${Flex.fmtUsd(bar.spent)}, saved ${Flex.fmtUsd(bar.saved)} (standard ${Flex.fmtUsd(bar.standard)}), ${bar.runs} run(s)`));
        const spent = Flex.svgEl("rect", {
          class: "spent", x: x + 1, width: barW - 2, y: y(bar.spent), height: Math.max(0, y(0) - y(bar.spent)),
        });
        spent.append(Flex.svgEl("title", {}, `${night} · ${dag}: spent ${Flex.fmtUsd(bar.spent)}`));
        g.append(full, spent);
        svg.append(g);
      });
    });
    dags.forEach((dag, j) => {
      legend.append(Flex.el("span", { class: "legend-item" }, Flex.el("span", { class: `swatch dag-${j % 8}` }), dag));
    });
  }

  function renderTable(rows) {
    const body = document.querySelector("#flex-runs tbody");
    body.replaceChildren(
      ...rows.map((r) => {
        const tiers = Object.entries(r.tiers || {}).map(([k, v]) => `${k} ${Flex.fmtInt(v)}`).join(", ") || "—";
        const mapped = r.map_index >= 0 ? ` [${r.map_index}]` : "";
        return Flex.el("tr", { "data-run-id": r.run_id, "data-dag-id": r.dag_id, "data-task-id": r.task_id, "data-map-index": r.map_index },
          Flex.el("td", { text: Flex.fmtTime(r.date || r.finished_at, true) }),
          Flex.el("td", { text: r.dag_id }),
          Flex.el("td", { class: "mono", text: r.run_id }),
          Flex.el("td", {}, Flex.el("a", { href: tabUrl(r), target: "_top", text: r.task_id + mapped })),
          Flex.el("td", { class: "num", text: Flex.fmtInt(r.items) }),
          Flex.el("td", { class: r.failed ? "num bad-text" : "num", text: Flex.fmtInt(r.failed) }),
          Flex.el("td", { class: "num", "data-value": r.cost.actual, text: Flex.fmtUsd(r.cost.actual) }),
          Flex.el("td", { class: "num", "data-value": r.cost.standard_equivalent, text: Flex.fmtUsd(r.cost.standard_equivalent) }),
          Flex.el("td", { class: "num ok-text", "data-value": r.cost.saved, text: Flex.fmtUsd(r.cost.saved) }),
          Flex.el("td", { class: "num", text: Flex.fmtDuration(r.duration_s) }),
          Flex.el("td", { text: tiers }),
          Flex.el("td", { text: r.model || "—" }));
      })
    );
    document.getElementById("flex-runs-empty").hidden = rows.length > 0;
  }

  function renderDagFilter() {
    const select = document.getElementById("flex-dag-filter");
    const current = select.value;
    const dags = [...new Set(runs.map((r) => r.dag_id))].sort();
    select.replaceChildren(Flex.el("option", { value: "", text: "all DAGs" }), ...dags.map((d) => Flex.el("option", { value: d, text: d })));
    select.value = dags.includes(current) ? current : "";
  }

  function render() {
    const rows = filtered();
    renderTotals(rows);
    renderChart(rows);
    renderTable(rows);
  }

  async function load() {
    const limit = document.getElementById("flex-limit").value;
    try {
      const data = await Flex.api(`../api/runs?limit=${enc(limit)}`);
      Flex.showError("");
      runs = Array.isArray(data.runs) ? data.runs : [];
      Flex.revealContent(); // before drawing: the chart measures its width
      renderDagFilter();
      render();
      const now = new Date();
      const updated = Flex.setText("flex-updated", now.toLocaleTimeString());
      updated.dataset.at = now.toISOString();
      document.body.dataset.loaded = "1";
    } catch (err) {
      Flex.showError(`Could not load the flex runs: ${err.message}` + (err.status ? ` (HTTP ${err.status})` : ""));
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    Flex.followParentTheme();
    document.getElementById("flex-dag-filter").addEventListener("change", render);
    document.getElementById("flex-limit").addEventListener("change", load);
    window.addEventListener("resize", () => renderChart(filtered()));
    load();
    // New nights arrive slowly: a look every minute is plenty (skipped while the page is hidden).
    setInterval(() => { if (!document.hidden) load(); }, 60000);
  });
})();
