// midmix browse page: mixtures, their phases' composition, training runs' realized shares, datasets and jobs.
// Plain DOM + inline SVG, no dependencies (the service may run with no internet).
"use strict";

const PALETTE = ["#3157d5", "#e0803b", "#2f9e6e", "#c2417a", "#8a5cd1", "#c9a227",
                 "#2aa1b8", "#d1493f", "#6d7f99", "#7aa63a", "#b5651d", "#5b6cf0"];
const colorOf = new Map();
const SVG_NS = "http://www.w3.org/2000/svg";

function color(label) {
  if (!colorOf.has(label)) colorOf.set(label, PALETTE[colorOf.size % PALETTE.length]);
  return colorOf.get(label);
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "onclick") node.onclick = value;
    else if (key === "style") node.style.cssText = value;
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

const fmt = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));
const pct = (x) => `${(100 * x).toFixed(1)}%`;

async function api(path) {
  const token = document.getElementById("token").value.trim();
  const response = await fetch(path, { headers: token ? { Authorization: `Bearer ${token}` } : {} });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.detail || `HTTP ${response.status} for ${path}`);
  return body;
}

// A 100%-stacked horizontal bar of (label, value) pairs, with a legend giving shares.
// Percent coordinates (no viewBox) let the bar fill its column without stretching the labels.
function shareChart(title, pairs) {
  const total = pairs.reduce((sum, [, value]) => sum + value, 0) || 1;
  const bar = svg("svg", { width: "100%", height: 26, role: "img", "aria-label": title, class: "share-chart" });
  let x = 0;
  for (const [label, value] of pairs) {
    const share = (100 * value) / total;
    const rect = svg("rect", { x: `${x}%`, y: 0, width: `${Math.max(share, 0.1)}%`, height: 26, fill: color(label) });
    rect.append(svg("title", {}, `${label}: ${fmt(value)} tokens (${pct(value / total)})`));
    bar.append(rect);
    if (share > 9) bar.append(svg("text", { x: `${x + 1}%`, y: 17, style: "fill:#fff" }, pct(value / total)));
    x += share;
  }
  const legend = el("div", { class: "legend" },
    pairs.map(([label, value]) => el("span", { style: `--swatch:${color(label)}` }, `${label} ${pct(value / total)}`)));
  return el("div", { class: "chart" }, el("h4", {}, title), bar, legend);
}

// Vertical bars over equal-width bins (quality histograms), in percent x coordinates.
function histogram(title, edges, counts) {
  const height = 130, top = 16, bottom = 18;
  const max = Math.max(...counts, 1);
  const step = 100 / counts.length;
  const chart = svg("svg", { width: "100%", height, role: "img", "aria-label": title, class: "histogram" });
  counts.forEach((count, i) => {
    const h = ((height - top - bottom) * count) / max;
    const rect = svg("rect", { x: `${i * step + step * 0.08}%`, y: height - bottom - h, width: `${step * 0.84}%`,
                               height: h, fill: "#3157d5", rx: 1 });
    rect.append(svg("title", {}, `[${edges[i].toFixed(2)}, ${edges[i + 1].toFixed(2)}): ${fmt(count)} docs`));
    chart.append(rect);
  });
  chart.append(svg("line", { x1: "0%", x2: "100%", y1: height - bottom, y2: height - bottom, stroke: "#9aa3b5" }));
  chart.append(svg("text", { x: "0%", y: height - 4 }, edges[0].toFixed(2)));
  chart.append(svg("text", { x: "100%", y: height - 4, "text-anchor": "end" }, edges[edges.length - 1].toFixed(2)));
  chart.append(svg("text", { x: "0%", y: 11 }, `max ${fmt(max)} docs/bin`));
  return el("div", { class: "chart" }, el("h4", {}, title), chart);
}

function qualityCharts(manifest) {
  return Object.entries(manifest.quality_histograms || {}).map(([name, h]) =>
    histogram(`${manifest.version}: ${name} score`, h.edges, h.counts));
}

const entries = (object) => Object.entries(object || {}).sort((a, b) => b[1] - a[1]);

function componentTable(phase) {
  const rows = phase.components.map((c) => el("tr", {},
    el("td", {}, el("span", { style: `color:${color(c.name)}` }, "■ "), c.name, c.general ? " (general)" : ""),
    el("td", { class: "num" }, c.weight.toFixed(3)),
    el("td", { class: "num" }, fmt(c.target_tokens)),
    el("td", { class: "num" }, fmt(c.realized_tokens)),
    el("td", { class: "num" + (c.epochs > 1 ? " warn" : "") }, `${Number(c.epochs).toFixed(2)}×`),
    el("td", { class: "num" }, fmt(c.unique_docs)),
    el("td", {}, Object.entries(c.thresholds || {}).map(([k, v]) => `${k} ≥ ${Number(v).toFixed(3)}`).join(", ") || "–"),
  ));
  return el("table", { class: "components" },
    el("thead", {}, el("tr", {}, ["component", "weight", "target tokens", "realized tokens", "repetition",
                                  "unique docs", "thresholds"].map((h, i) => el("th", { class: i && i < 6 ? "num" : "" }, h)))),
    el("tbody", {}, rows));
}

function phaseCard(phase, composition) {
  const lr = phase.lr || {};
  const curriculum = phase.curriculum || {};
  const budgetShare = phase.token_budget ? phase.tokens / phase.token_budget : 1;
  const byComponent = phase.components.map((c) => [c.name, c.realized_tokens]);
  const mix = composition[phase.name] || { domain: {}, source: {} };
  return el("div", { class: "card phase", "data-phase": phase.name },
    el("h3", {}, `Phase ${phase.index + 1}: ${phase.name}`),
    el("div", { class: "facts" },
      el("span", {}, "budget ", el("b", {}, fmt(phase.token_budget)), " tokens"),
      el("span", {}, "realized ", el("b", { class: "realized" }, fmt(phase.tokens)), ` (${pct(budgetShare)})`),
      el("span", {}, "docs ", el("b", {}, fmt(phase.docs))),
      el("span", {}, "seq_len ", el("b", {}, phase.seq_len)),
      el("span", {}, "rope θ ", el("b", {}, fmt(phase.rope_theta))),
      el("span", {}, "lr ", el("b", {}, `${lr.shape || "–"} w${lr.warmup ?? "–"}/s${lr.stable ?? "–"}/d${lr.decay ?? "–"}`)),
      el("span", {}, "curriculum ", el("b", {}, curriculum.key ? `${curriculum.key} ${curriculum.direction}` : "shuffled")),
    ),
    el("div", { class: "charts" },
      shareChart("tokens by component", byComponent),
      shareChart("tokens by domain", entries(mix.domain)),
      shareChart("tokens by source", entries(mix.source).slice(0, 11).concat(
        entries(mix.source).length > 11 ? [["other sources", entries(mix.source).slice(11).reduce((s, [, v]) => s + v, 0)]] : []))),
    componentTable(phase));
}

function lineageCard(manifest, datasetManifests) {
  const datasets = Object.entries((manifest.lineage || {}).datasets || {});
  return el("div", { class: "card lineage" }, el("h3", {}, "Lineage"),
    datasets.length === 0 ? el("p", { class: "muted" }, "no datasets recorded") :
    el("ul", {}, datasets.map(([version, info]) => el("li", {},
      el("a", { onclick: () => { location.hash = `#dataset/${version}`; } }, version), " ← models: ",
      Object.entries(info.models || {}).map(([name, sha]) => `${name} ${String(sha).slice(0, 12)}`).join(", ") || "none"))),
    el("p", { class: "muted" }, `tokenizer ${manifest.tokenizer.kind} (vocab ${fmt(manifest.tokenizer.vocab_size)}, `,
      `sha256 ${String(manifest.tokenizer.sha256).slice(0, 12)}), code ${manifest.code_version}`),
    el("h4", {}, "Quality of the source datasets"),
    el("div", { class: "charts" }, datasetManifests.flatMap(qualityCharts)));
}

async function showMixture(version) {
  const [manifest, composition] = await Promise.all([api(`/mixtures/${version}`), api(`/mixtures/${version}/composition`)]);
  const sources = Object.keys((manifest.lineage || {}).datasets || {});
  const datasetManifests = await Promise.all(sources.map((v) => api(`/datasets/${v}`).catch(() => ({ version: v }))));
  const total = manifest.phases.reduce((sum, p) => sum + (p.tokens || 0), 0);
  const evalRows = Object.entries(manifest.eval || {}).map(([name, e]) =>
    el("tr", {}, el("td", {}, name), el("td", { class: "num" }, fmt(e.rows)), el("td", { class: "num" }, fmt(e.tokens))));
  render(
    el("div", { class: "card" }, el("h2", { id: "mixture-title" }, manifest.name),
      el("div", { class: "muted sub" }, manifest.version),
      el("div", { class: "facts" },
        el("span", {}, "phases ", el("b", {}, manifest.phases.length)),
        el("span", {}, "tokens ", el("b", { id: "mixture-tokens" }, fmt(total))),
        el("span", {}, "tokenizer ", el("b", {}, manifest.tokenizer.kind))),
      shareChart("tokens by phase", manifest.phases.map((p) => [p.name, p.tokens]))),
    manifest.phases.map((phase) => phaseCard(phase, composition)),
    evalRows.length ? el("div", { class: "card" }, el("h3", {}, "Held-out eval"),
      el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "domain"), el("th", { class: "num" }, "docs"),
        el("th", { class: "num" }, "tokens"))), el("tbody", {}, evalRows))) : null,
    lineageCard(manifest, datasetManifests));
}

async function showDataset(version) {
  const manifest = await api(`/datasets/${version}`);
  const tokensBy = manifest.tokens_by || {};
  const steps = (manifest.steps || []).map((s) => el("tr", {}, el("td", {}, s.name),
    el("td", { class: "num" }, fmt(s.docs_in)), el("td", { class: "num" }, fmt(s.docs_out)),
    el("td", {}, Object.entries(s.dropped || {}).map(([k, v]) => `${k}: ${fmt(v)}`).join(", ") || "–")));
  const histograms = Object.entries(manifest.quality_histograms || {});
  render(
    el("div", { class: "card" }, el("h2", {}, "Dataset ", version),
      el("div", { class: "facts" },
        el("span", {}, "docs ", el("b", {}, fmt((manifest.counts || {}).docs))),
        el("span", {}, "tokens ", el("b", {}, fmt((manifest.counts || {}).tokens))),
        el("span", {}, "inputs ", el("b", {}, (manifest.inputs || []).map((i) => String(i.path).split("/").pop()).join(", ")))),
      el("div", { class: "charts" },
        shareChart("tokens by domain", entries(tokensBy.domain)),
        shareChart("tokens by language", entries(tokensBy.lang).slice(0, 11)),
        shareChart("tokens by source", entries(tokensBy.source).slice(0, 11)))),
    el("div", { class: "card" }, el("h3", {}, "Quality"),
      histograms.length ? el("div", { class: "charts" }, qualityCharts(manifest))
        : el("p", { class: "muted" }, "no quality histograms in this manifest")),
    steps.length ? el("div", { class: "card" }, el("h3", {}, "Curation steps"),
      el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "step"), el("th", { class: "num" }, "in"),
        el("th", { class: "num" }, "out"), el("th", {}, "dropped by reason"))), el("tbody", {}, steps))) : null);
}

// Lines over steps: each component's realized share per logging window (solid) and its target (dashed).
function windowChart(title, windows) {
  const width = 640, height = 170, left = 34, right = 8, top = 10, bottom = 22;
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, width: "100%", role: "img", "aria-label": title, class: "windows" });
  const steps = windows.map((w) => (w.steps[0] + w.steps[1]) / 2);
  const lo = Math.min(...steps), hi = Math.max(...steps, lo + 1);
  const x = (step) => left + ((step - lo) / (hi - lo)) * (width - left - right);
  const y = (share) => top + (1 - share) * (height - top - bottom);
  for (const tick of [0, 0.25, 0.5, 0.75, 1]) {
    chart.append(svg("line", { x1: left, x2: width - right, y1: y(tick), y2: y(tick), stroke: "#e2e5eb" }));
    chart.append(svg("text", { x: 2, y: y(tick) + 4 }, `${100 * tick}%`));
  }
  const names = Object.keys((windows[0] || {}).components || {});
  for (const name of names) {
    const line = (key) => windows.map((w, i) => `${i ? "L" : "M"}${x(steps[i]).toFixed(1)},${y(w.components[name][key]).toFixed(1)}`).join("");
    chart.append(svg("path", { d: line("target"), fill: "none", stroke: color(name), "stroke-dasharray": "4 3", "stroke-width": 1 }));
    const realized = svg("path", { d: line("share"), fill: "none", stroke: color(name), "stroke-width": 1.8, class: "realized-line" });
    realized.append(svg("title", {}, `${name}: realized share per window (dashed: target)`));
    chart.append(realized);
  }
  chart.append(svg("text", { x: left, y: height - 4 }, `step ${Math.round(lo)}`));
  chart.append(svg("text", { x: width - right, y: height - 4, "text-anchor": "end" }, `step ${Math.round(hi)}`));
  return el("div", { class: "chart wide" }, el("h4", {}, title), chart);
}

function runPhaseCard(phase) {
  const names = Object.keys(phase.manifest);
  const realized = phase.realized || {};
  const worst = (name) => Math.max(0, ...phase.windows.map((w) => Math.abs(w.components[name].share - w.components[name].target)));
  const rows = names.map((name) => {
    const got = realized[name] ? realized[name].share : null;
    return el("tr", { "data-component": name },
      el("td", {}, el("span", { style: `color:${color(name)}` }, "■ "), name),
      el("td", { class: "num" }, pct(phase.manifest[name])),
      el("td", { class: "num realized-share" }, got === null ? "–" : pct(got)),
      el("td", { class: "num" }, got === null ? "–" : `${(100 * (got - phase.manifest[name])).toFixed(2)} pp`),
      el("td", { class: "num" }, phase.windows.length ? `${(100 * worst(name)).toFixed(2)} pp` : "–"));
  });
  const padding = phase.padding && phase.padding.tokens ? `, last step padded with ${fmt(phase.padding.sequences)} sequences` : "";
  return el("div", { class: "card run-phase", "data-phase": phase.name },
    el("h3", {}, `Phase ${phase.name}`),
    el("div", { class: "facts" },
      el("span", {}, "steps ", el("b", {}, fmt(phase.steps_trained)), phase.complete ? "" : " (in progress)"),
      el("span", {}, "seq_len ", el("b", {}, phase.seq_len)),
      el("span", {}, "last loss ", el("b", {}, Number(phase.loss).toFixed(4))),
      el("span", {}, "eval ", el("b", {}, Object.entries(phase.eval || {}).map(([d, v]) => `${d} ${Number(v).toFixed(3)}`).join(", ") || "–")),
      phase.scheduled ? el("span", {}, el("b", {}, "weights follow a schedule")) : null),
    el("div", { class: "charts" },
      shareChart("manifest: tokens by component", names.map((n) => [n, phase.manifest[n]])),
      realized && names.some((n) => realized[n]) ?
        shareChart(`realized over the ${phase.steps_trained} steps trained${padding}`, names.map((n) => [n, realized[n] ? realized[n].tokens : 0])) : null),
    phase.windows.length ? windowChart("realized share per logging window (dashed: target)", phase.windows) : null,
    el("table", { class: "components" },
      el("thead", {}, el("tr", {}, ["component", "manifest", "realized", "difference", "worst window"].map((h, i) =>
        el("th", { class: i ? "num" : "" }, h)))),
      el("tbody", {}, rows)));
}

async function showRun(name) {
  const summary = await api(`/runs/${name}`);
  render(
    el("div", { class: "card" }, el("h2", { id: "run-title" }, `Run ${name}`),
      el("div", { class: "facts" },
        el("span", {}, "mixture ", el("a", { onclick: () => { location.hash = `#mixture/${summary.mixture}`; } }, summary.mixture)),
        el("span", {}, "steps ", el("b", {}, fmt(summary.global_steps))),
        el("span", {}, "phases ", el("b", {}, summary.phases.length)))),
    summary.phases.length ? summary.phases.map(runPhaseCard) : el("p", { class: "muted" }, "no phase trained yet"));
}

function render(...nodes) {
  const detail = document.getElementById("detail");
  detail.replaceChildren(...nodes.flat().filter(Boolean));
}

function listItem(kind, version, name, sub) {
  return el("li", { "data-version": version, onclick: () => { location.hash = `#${kind}/${version}`; } },
    el("span", { class: "name" }, name), el("span", { class: "sub" }, sub));
}

async function loadLists() {
  const [info, mixtures, runs, datasets, jobs] = await Promise.all(
    [api("/version"), api("/mixtures"), api("/runs"), api("/datasets"), api("/jobs")]);
  document.getElementById("service-version").textContent = `service ${info.version}`;
  document.getElementById("mixtures").replaceChildren(...mixtures.map((m) => listItem("mixture", m.version,
    m.name || m.version, `${m.version} · ${m.phases.length} phases · ${fmt(m.phases.reduce((s, p) => s + (p.tokens || 0), 0))} tok`)));
  document.getElementById("runs").replaceChildren(...runs.map((r) => listItem("run", r.name, r.name,
    `${r.mixture} · ${fmt(r.global_steps)} steps · ${r.phases.join(", ")}`)));
  document.getElementById("datasets").replaceChildren(...datasets.map((d) => listItem("dataset", d.version,
    d.version, `${fmt(d.docs)} docs · ${fmt(d.tokens)} tok`)));
  document.getElementById("jobs").replaceChildren(...jobs.slice(0, 8).map((j) => el("li", {},
    el("span", { class: `name state-${j.state}` }, `${j.kind} ${j.state}`),
    el("span", { class: "sub" }, `${j.id}${j.progress !== null ? ` · ${j.progress.toFixed(0)}%` : ""}${j.result ? ` · ${j.result}` : ""}`))));
  return mixtures;
}

async function route() {
  const [kind, version] = location.hash.slice(1).split("/");
  for (const li of document.querySelectorAll(".versions li")) li.classList.toggle("selected", li.dataset.version === version);
  try {
    if (kind === "mixture" && version) await showMixture(version);
    else if (kind === "dataset" && version) await showDataset(version);
    else if (kind === "run" && version) await showRun(version);
  } catch (error) {
    render(el("p", { class: "warn", id: "status" }, error.message));
  }
}

async function start() {
  const token = document.getElementById("token");
  token.value = localStorage.getItem("midmix-token") || "";
  token.onchange = () => { localStorage.setItem("midmix-token", token.value); start(); };
  window.onhashchange = route;
  try {
    const mixtures = await loadLists();
    if (!location.hash && mixtures.length) location.hash = `#mixture/${mixtures[0].version}`;
    else if (!mixtures.length && !location.hash) render(el("p", { class: "muted", id: "status" }, "No mixture versions yet: build one with `midmix remote build SPEC`."));
    await route();
  } catch (error) {
    render(el("p", { class: "warn", id: "status" }, error.message));
  }
}

start();
