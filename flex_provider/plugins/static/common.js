/* Shared by the Flex pages: API calls, formatting, theme, and small inline-SVG charts.
 *
 * No framework and no CDN: the pages must work on machines without internet. Every URL is relative
 * to the page (/flex/ui/...), so Airflow behind a base path (/airflow/flex/ui/...) works too. Data
 * reaches the DOM only through textContent and attributes, never innerHTML: failure messages come
 * from a remote server and must not be able to inject markup.
 */
"use strict";

const Flex = (() => {
  const SVG_NS = "http://www.w3.org/2000/svg";

  class ApiError extends Error {
    constructor(status, detail) {
      super(detail);
      this.status = status;
    }
  }

  /** GET a plugin API path (relative to the page's folder, e.g. "../api/runs"), with the UI's cookie. */
  async function api(path) {
    let response;
    try {
      response = await fetch(new URL(path, document.baseURI), {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
        cache: "no-store",
      });
    } catch (err) {
      throw new ApiError(0, `cannot reach the Airflow API server (${err.message})`);
    }
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    if (!response.ok) {
      let detail = body && body.detail;
      if (typeof detail !== "string") detail = detail ? JSON.stringify(detail) : response.statusText;
      if (response.status === 401) detail = `not signed in to Airflow (${detail}); sign in again and reload`;
      if (response.status === 403) detail = `you may not read this DAG (${detail})`;
      throw new ApiError(response.status, detail);
    }
    return body;
  }

  /** The task instance a Flex tab is for, from its query string, and the API path of its state;
   * null without dag_id/run_id/task_id. The UI leaves "{MAP_INDEX}" as it is on the page of a task
   * that is not mapped: anything but a number is -1. */
  function taskFromQuery(search) {
    const params = new URLSearchParams(search);
    const ti = {
      dag_id: params.get("dag_id") || "",
      run_id: params.get("run_id") || "",
      task_id: params.get("task_id") || "",
      map_index: /^-?\d+$/.test(params.get("map_index") || "") ? params.get("map_index") : "-1",
    };
    if (!ti.dag_id || !ti.run_id || !ti.task_id) return null;
    const enc = encodeURIComponent;
    ti.path = `../api/runs/${enc(ti.dag_id)}/${enc(ti.run_id)}/${enc(ti.task_id)}?map_index=${ti.map_index}`;
    return ti;
  }

  // -- formatting ---------------------------------------------------------------------------------
  const intFmt = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });

  function fmtInt(value) {
    return typeof value === "number" && isFinite(value) ? intFmt.format(value) : "—";
  }

  function fmtUsd(value) {
    if (typeof value !== "number" || !isFinite(value)) return "—";
    const abs = Math.abs(value);
    const digits = abs === 0 ? 2 : abs < 0.01 ? 5 : abs < 1 ? 4 : 2;
    return (value < 0 ? "-$" : "$") + abs.toLocaleString(undefined, {
      minimumFractionDigits: digits,
      maximumFractionDigits: digits,
    });
  }

  function fmtPct(part, whole) {
    if (typeof part !== "number" || typeof whole !== "number" || whole <= 0) return "";
    return `${((100 * part) / whole).toFixed(part === whole ? 0 : 1)}%`;
  }

  function fmtDuration(seconds) {
    if (typeof seconds !== "number" || !isFinite(seconds) || seconds < 0) return "—";
    if (seconds < 1) return "< 1 s";
    const s = Math.round(seconds);
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    if (h) return `${h} h ${String(m).padStart(2, "0")} min`;
    if (m) return `${m} min ${String(r).padStart(2, "0")} s`;
    return `${r} s`;
  }

  function fmtTime(iso, withDate) {
    if (!iso) return "—";
    const d = new Date(iso);
    if (isNaN(d.getTime())) return String(iso);
    return withDate ? d.toLocaleString() : d.toLocaleTimeString();
  }

  /** The local calendar day of an ISO date, "YYYY-MM-DD" (nights are grouped by it). */
  function localDay(iso) {
    const d = new Date(iso);
    if (isNaN(d.getTime())) return "unknown";
    const pad = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  }

  // -- DOM helpers ----------------------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "text") node.textContent = String(value);
      else node.setAttribute(key, String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function svgEl(tag, attrs, text) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined) node.setAttribute(key, String(value));
    }
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  function setText(id, text) {
    const node = document.getElementById(id);
    if (node) node.textContent = text;
    return node;
  }

  function showError(message) {
    const node = document.getElementById("flex-error");
    if (!node) return;
    node.textContent = message || "";
    node.hidden = !message;
    const loading = document.getElementById("flex-loading");
    if (loading && message) loading.hidden = true;
  }

  /** The page has data to show: reveal its content (hidden until then, so an error is shown alone). */
  function revealContent() {
    const content = document.getElementById("flex-content");
    if (content) content.hidden = false;
    const loading = document.getElementById("flex-loading");
    if (loading) loading.hidden = true;
  }

  // -- theme ----------------------------------------------------------------------------------------
  /** Follow the Airflow UI's own light/dark choice when the parent page is reachable (same origin),
   * else the system's (prefers-color-scheme, in the CSS). */
  function followParentTheme() {
    let root;
    try {
      root = window.parent !== window ? window.parent.document.documentElement : null;
    } catch (_) {
      root = null;
    }
    if (!root) return;
    const apply = () => {
      const cls = root.classList;
      const theme = cls.contains("dark") ? "dark" : cls.contains("light") ? "light" : root.dataset.theme || "";
      if (theme === "dark" || theme === "light") document.documentElement.dataset.theme = theme;
    };
    apply();
    new MutationObserver(apply).observe(root, { attributes: true, attributeFilter: ["class", "data-theme"] });
  }

  // -- charts ---------------------------------------------------------------------------------------
  const PAD = { left: 56, right: 12, top: 10, bottom: 24 };

  /** Axis scale for values up to `rawMax`: about four round steps (1, 2, 2.5 or 5 times a power of
   * ten; whole steps for counts) and the axis top, a whole number of steps. */
  function niceScale(rawMax, integer) {
    const top = rawMax > 0 ? rawMax : 1;
    const target = top / 4;
    const exp = Math.pow(10, Math.floor(Math.log10(target)));
    let step = 10 * exp;
    for (const m of integer ? [1, 2, 5, 10] : [1, 2, 2.5, 5, 10]) {
      if (m * exp >= target) {
        step = m * exp;
        break;
      }
    }
    if (integer) step = Math.max(1, Math.round(step));
    return { max: Math.ceil(top / step - 1e-9) * step, step };
  }

  function size(svg, fallbackHeight) {
    const width = Math.max(Math.round(svg.getBoundingClientRect().width) || 600, 240);
    const height = Number(svg.getAttribute("data-height")) || fallbackHeight || 180;
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.setAttribute("height", String(height));
    return { width, height };
  }

  function clear(svg) {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
  }

  function placeholder(svg, text) {
    const { width, height } = size(svg);
    svg.append(svgEl("text", { x: width / 2, y: height / 2, class: "chart-empty", "text-anchor": "middle" }, text));
  }

  function yAxis(svg, width, height, scale, format) {
    const count = Math.round(scale.max / scale.step);
    for (let i = 0; i <= count; i++) {
      const value = scale.step * i;
      const y = height - PAD.bottom - ((height - PAD.top - PAD.bottom) * value) / scale.max;
      svg.append(svgEl("line", { x1: PAD.left, x2: width - PAD.right, y1: y, y2: y, class: "grid" }));
      svg.append(svgEl("text", { x: PAD.left - 6, y: y + 4, class: "tick", "text-anchor": "end" }, format(value)));
    }
  }

  function timeAxis(svg, width, height, t0, t1) {
    const span = Math.max(t1 - t0, 1);
    const ticks = Math.max(1, Math.min(4, Math.floor((width - PAD.left - PAD.right) / 90)));
    const options = span >= 6 * 3600 ? { hour: "2-digit", minute: "2-digit", hour12: false } : { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false };
    for (let i = 0; i <= ticks; i++) {
      const t = t0 + (span * i) / ticks;
      const x = PAD.left + ((width - PAD.left - PAD.right) * i) / ticks;
      const label = new Date(t * 1000).toLocaleTimeString([], options);
      const anchor = i === 0 ? "start" : i === ticks ? "end" : "middle";
      svg.append(svgEl("text", { x, y: height - 6, class: "tick", "text-anchor": anchor }, label));
    }
  }

  /**
   * Lines over time. `lines`: [{name, key, values: [[ts, value], ...], dashed}] — each line with at
   * least two points becomes a <path class="series ..."> (the browser tests look for ".series").
   * `legend`: an element that receives one swatch per line.
   */
  function lineChart(svg, lines, { format = fmtInt, integer = true, legend = null, empty = "Waiting for data…", minMax = 0 } = {}) {
    clear(svg);
    if (legend) legend.replaceChildren();
    const drawn = lines.filter((line) => line.values.length >= 2);
    if (!drawn.length) {
      placeholder(svg, empty);
      return;
    }
    const { width, height } = size(svg);
    const all = drawn.flatMap((line) => line.values);
    const t0 = Math.min(...all.map((p) => p[0]));
    const t1 = Math.max(...all.map((p) => p[0]));
    const scale = niceScale(Math.max(minMax, ...all.map((p) => p[1])), integer);
    const max = scale.max;
    yAxis(svg, width, height, scale, format);
    timeAxis(svg, width, height, t0, t1);
    const x = (t) => PAD.left + ((width - PAD.left - PAD.right) * (t - t0)) / Math.max(t1 - t0, 1);
    const y = (v) => height - PAD.bottom - ((height - PAD.top - PAD.bottom) * v) / max;
    drawn.forEach((line, index) => {
      const d = line.values.map(([t, v], i) => `${i ? "L" : "M"}${x(t).toFixed(1)},${y(v).toFixed(1)}`).join("");
      const path = svgEl("path", {
        d,
        class: `series series-${index}${line.dashed ? " dashed" : ""}`,
        "data-series": line.key || line.name,
      });
      path.append(svgEl("title", {}, `${line.name}: ${format(line.values[line.values.length - 1][1])}`));
      svg.append(path);
      if (legend) {
        legend.append(
          el("span", { class: "legend-item" },
            el("span", { class: `swatch series-${index}${line.dashed ? " dashed" : ""}` }),
            `${line.name} (${format(line.values[line.values.length - 1][1])})`)
        );
      }
    });
  }

  return {
    ApiError, api, taskFromQuery, fmtInt, fmtUsd, fmtPct, fmtDuration, fmtTime, localDay,
    el, svgEl, setText, showError, revealContent, followParentTheme, lineChart, niceScale, size, clear, placeholder, yAxis, PAD,
  };
})();
