/* The "Flex" tab of a task instance: the live state of its flex run, refreshed every few seconds
 * while the task can still make progress, left alone once it is over. */
"use strict";

(() => {
  const REFRESH_MS = 3000;
  const MAX_BACKOFF_MS = 30000;
  // The task may still make progress in these states (null: the task instance has no state yet).
  const ACTIVE = new Set([null, "scheduled", "queued", "running", "deferred", "up_for_retry", "up_for_reschedule", "restarting"]);
  const COUNTERS = ["succeeded", "failed", "in_flight", "skipped", "requests", "unavailable", "rate_limited", "fallbacks", "transient_errors"];

  const ti = Flex.taskFromQuery(window.location.search);
  let timer = null;
  let failures = 0;
  let last = null;

  // -- rendering --------------------------------------------------------------------------------------
  function renderHeader(data) {
    const mapped = Number(data.map_index) >= 0 ? ` [${data.map_index}]` : "";
    Flex.setText("flex-title", `${data.dag_id} › ${data.run_id} › ${data.task_id}${mapped}`);
    const state = Flex.setText("flex-status", data.state || "no state");
    state.dataset.state = data.state || "none";
    const status = Flex.setText("flex-run-status", {
      not_started: "not started", running: "running", finished: "finished", stopped: "stopped",
    }[data.status] || data.status);
    status.dataset.status = data.status;
    const notice = document.getElementById("flex-notice");
    notice.textContent = data.message || "";
    notice.hidden = !data.message;
  }

  function renderProgress(data) {
    const done = data.done || 0;
    const total = typeof data.total === "number" ? data.total : null;
    const bar = document.getElementById("flex-progress");
    bar.dataset.done = String(done);
    bar.dataset.total = total === null ? "" : String(total);
    const pct = total ? Math.min(100, (100 * done) / total) : data.status === "finished" ? 100 : 0;
    bar.setAttribute("aria-valuenow", pct.toFixed(1));
    bar.querySelector(".progress-fill").style.width = `${pct}%`;
    bar.classList.toggle("indeterminate", total === null && data.status === "running");
    Flex.setText(
      "flex-progress-text",
      total === null ? `${Flex.fmtInt(done)} items done` : `${Flex.fmtInt(done)} / ${Flex.fmtInt(total)} items (${Flex.fmtPct(done, total) || "0%"})`
    );
    const eta = document.getElementById("flex-eta");
    eta.dataset.etaS = typeof data.eta_s === "number" ? String(data.eta_s) : "";
    if (data.status === "finished") eta.textContent = "Finished";
    else if (typeof data.eta_s === "number") {
      const at = data.eta_at ? ` at ${Flex.fmtTime(data.eta_at)}` : "";
      eta.textContent = `ETA ${Flex.fmtDuration(data.eta_s)}${at}`;
    } else eta.textContent = data.status === "running" ? "ETA: measuring…" : "ETA —";
    Flex.setText(
      "flex-throughput",
      typeof data.throughput_per_min === "number" ? `${data.throughput_per_min.toFixed(1)} items/min` : ""
    );
    Flex.setText("flex-elapsed", typeof data.duration_s === "number" ? `elapsed ${Flex.fmtDuration(data.duration_s)}` : "");
  }

  function renderCounters(data) {
    for (const name of COUNTERS) {
      const node = document.querySelector(`[data-counter="${name}"]`);
      const value = typeof data[name] === "number" ? data[name] : 0;
      node.dataset.value = String(value);
      node.querySelector(".value").textContent = Flex.fmtInt(value);
      node.classList.toggle("nonzero", value > 0);
    }
    const reasons = data.fallbacks_by_reason || {};
    const fallbacks = document.querySelector('[data-counter="fallbacks"]');
    const text = Object.entries(reasons).map(([k, v]) => `${k}: ${v}`).join(", ");
    fallbacks.title = text ? `Items sent to the fallback tier (${text})` : "Items sent to the fallback tier";
  }

  function renderCost(data) {
    // A model without a price makes every amount null: say "unknown", never show a made-up $0.
    const cost = data.cost || {};
    const usd = (value) => (typeof value === "number" ? value : null);
    for (const [id, key] of [["flex-cost-actual", "actual"], ["flex-cost-standard", "standard_equivalent"], ["flex-cost-saved", "saved"]]) {
      const node = document.getElementById(id);
      const value = usd(cost[key]);
      node.dataset.value = value === null ? "" : String(value);
      node.textContent = value === null ? "unknown" : Flex.fmtUsd(value);
    }
    const saved = document.getElementById("flex-cost-saved");
    const pct = Flex.fmtPct(cost.saved, cost.standard_equivalent);
    if (pct) saved.textContent += ` (${pct})`;
    const cache = document.getElementById("flex-cost-cache");
    const cacheSaved = usd(cost.cache_saved);
    cache.dataset.value = cacheSaved === null ? "" : String(cacheSaved);
    cache.textContent = cacheSaved ? `+ ${Flex.fmtUsd(cacheSaved)} by the prompt cache` : "";
    const t = data.tokens || {};
    Flex.setText("flex-tokens", `in ${Flex.fmtInt(t.input)} (cached ${Flex.fmtInt(t.cached)}) · out ${Flex.fmtInt(t.output)}`);
    const unpriced = document.getElementById("flex-unpriced");
    unpriced.hidden = !(cost.unpriced_tokens > 0);
    unpriced.textContent = cost.unpriced_tokens > 0
      ? `Cost unknown: ${Flex.fmtInt(cost.unpriced_tokens)} tokens of a model with no known price (pass prices= to the operator)`
      : "";
  }

  function renderCharts(data) {
    const series = Array.isArray(data.series) ? data.series : [];
    const pick = (key) => series.map((p) => [p.ts, p[key] || 0]);
    const progress = [{ name: "done", key: "done", values: pick("done") }];
    if (typeof data.total === "number" && series.length >= 2) {
      progress.push({ name: "total", key: "total", dashed: true, values: [[series[0].ts, data.total], [series[series.length - 1].ts, data.total]] });
    }
    Flex.lineChart(document.getElementById("flex-chart-progress"), progress, {
      legend: document.getElementById("flex-legend-progress"),
    });
    Flex.lineChart(
      document.getElementById("flex-chart-429"),
      [
        { name: "unavailable (429)", key: "unavailable", values: pick("unavailable") },
        { name: "rate limited (429)", key: "rate_limited", values: pick("rate_limited") },
      ],
      { legend: document.getElementById("flex-legend-429"), minMax: 1 }
    );
    const tiers = new Set();
    for (const p of series) for (const name of Object.keys(p.tiers || {})) tiers.add(name);
    for (const name of Object.keys(data.tiers || {})) tiers.add(name);
    if (!tiers.size) tiers.add("flex");
    Flex.lineChart(
      document.getElementById("flex-chart-tiers"),
      [...tiers].sort().map((name) => ({ name, key: `tier-${name}`, values: series.map((p) => [p.ts, (p.tiers || {})[name] || 0]) })),
      { legend: document.getElementById("flex-legend-tiers") }
    );
  }

  function renderFailures(data) {
    const groups = Array.isArray(data.failure_groups) ? data.failure_groups : [];
    const box = document.getElementById("flex-failure-groups");
    box.replaceChildren(
      ...groups.map((g) =>
        Flex.el("div", { class: "failure-group", "data-type": g.type, "data-count": g.count },
          Flex.el("strong", { text: `${Flex.fmtInt(g.count)} × ${g.type}` }),
          g.code ? ` ${g.code}` : "",
          g.status_code ? ` (HTTP ${g.status_code})` : "",
          Flex.el("span", { class: g.retryable ? "tag retry" : "tag final", text: g.retryable ? "retryable" : "final" }),
          g.sample_message ? Flex.el("div", { class: "muted mono", text: g.sample_message }) : null)
      )
    );
    const rows = (Array.isArray(data.failures) ? data.failures : []).map((f) =>
      Flex.el("tr", { "data-failure-id": f.id },
        Flex.el("td", { class: "mono", text: f.id }),
        Flex.el("td", { text: f.type }),
        Flex.el("td", { text: f.code || (f.status_code ? `HTTP ${f.status_code}` : "—") }),
        Flex.el("td", { class: "message", text: f.message || "" }))
    );
    document.querySelector("#flex-failures tbody").replaceChildren(...rows);
    const failed = data.failed || 0;
    const empty = document.getElementById("flex-failures-empty");
    empty.hidden = rows.length > 0;
    document.getElementById("flex-failures").hidden = rows.length === 0;
    if (rows.length && failed > rows.length) {
      empty.hidden = false;
      empty.textContent = `The first ${rows.length} of ${Flex.fmtInt(failed)} failed items; all of them are in the results' records.`;
    } else empty.textContent = "No failed items.";
  }

  function renderDetails(data) {
    Flex.setText("flex-model", data.model || "—");
    Flex.setText("flex-tier", data.service_tier || "—");
    Flex.setText("flex-output", data.output_path || (data.status === "not_started" ? "—" : "in XCom (the task's return value)"));
    Flex.setText("flex-started", Flex.fmtTime(data.started_at, true));
    Flex.setText("flex-checkpoint", Flex.fmtTime(data.updated_at, true));
    Flex.setText("flex-sessions", typeof data.sessions === "number" ? String(data.sessions) : "—");
    Flex.setText("flex-try", String(data.try_number ?? "—"));
  }

  /** The run's own limits, when it has them: spend against max_cost_usd, and the deadline's status. */
  function renderControls(data) {
    const budget = data.budget, deadline = data.deadline;
    document.getElementById("flex-controls").hidden = !budget && !deadline;
    const b = document.getElementById("flex-budget");
    b.hidden = !budget;
    if (budget) {
      b.dataset.spent = String(budget.spent);
      b.dataset.cap = String(budget.max_cost_usd);
      const skipped = data.budget_skipped ? ` · ${Flex.fmtInt(data.budget_skipped)} items not sent (over budget)` : "";
      b.textContent = `Budget: ${Flex.fmtUsd(budget.spent)} spent of ${Flex.fmtUsd(budget.max_cost_usd)}` +
        (budget.reserved ? ` (${Flex.fmtUsd(budget.reserved)} reserved in flight)` : "") + skipped;
      b.className = budget.exhausted ? "warn-text" : "";
    }
    const d = document.getElementById("flex-deadline");
    d.hidden = !deadline;
    if (deadline) {
      d.dataset.status = deadline.status;
      const finish = deadline.predicted_finish ? `, predicted finish ${Flex.fmtTime(deadline.predicted_finish)}` : "";
      const moved = deadline.on_fallback ? ` · ${Flex.fmtInt(deadline.on_fallback)} items sent to the standard tier to make it` : "";
      d.textContent = `Deadline ${Flex.fmtTime(deadline.at, true)}: ${deadline.status.replace("_", " ")}${finish}${moved}`;
      d.className = deadline.status === "missed" || deadline.status === "at_risk" ? "warn-text" : "";
    }
  }

  function render(data) {
    last = data;
    document.body.dataset.status = data.status;
    Flex.revealContent(); // before drawing: the charts measure their width
    renderHeader(data);
    renderProgress(data);
    renderCounters(data);
    renderCost(data);
    renderControls(data);
    renderCharts(data);
    renderFailures(data);
    renderDetails(data);
    const now = new Date();
    const updated = Flex.setText("flex-updated", now.toLocaleTimeString());
    updated.dataset.at = now.toISOString();
    document.body.dataset.loaded = "1";
  }

  // -- refreshing -------------------------------------------------------------------------------------
  function schedule(ms) {
    clearTimeout(timer);
    timer = setTimeout(refresh, ms);
  }

  async function refresh() {
    timer = null;
    if (document.hidden) return; // resumed by visibilitychange
    try {
      const data = await Flex.api(ti.path);
      failures = 0;
      Flex.showError("");
      render(data);
      if (ACTIVE.has(data.state ?? null)) schedule(REFRESH_MS);
      else document.body.dataset.refreshing = "0";
    } catch (err) {
      failures += 1;
      Flex.showError(`Could not load the flex run: ${err.message}` + (err.status ? ` (HTTP ${err.status})` : ""));
      document.body.dataset.errorStatus = String(err.status ?? "");
      // Not found or not allowed will not change by waiting; anything else may (restarts, network).
      if (err.status !== 403 && err.status !== 404 && err.status !== 422) {
        schedule(Math.min(REFRESH_MS * 2 ** Math.min(failures, 4), MAX_BACKOFF_MS));
      }
    }
  }

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && timer === null && (!last || ACTIVE.has(last.state ?? null))) refresh();
  });
  window.addEventListener("resize", () => { if (last) renderCharts(last); });

  document.addEventListener("DOMContentLoaded", () => {
    Flex.followParentTheme();
    if (ti === null) {
      Flex.showError("This page needs dag_id, run_id and task_id in its address (the Flex tab of a task instance sets them).");
      return;
    }
    document.body.dataset.refreshing = "1";
    refresh();
  });
})();
