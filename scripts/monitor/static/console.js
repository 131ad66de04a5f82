// The supervision console: polls the monitor's JSON API (same origin, cookie sent).
"use strict";

let lastAlert = 0;

function text(tag, value, cls) {
  const el = document.createElement(tag);
  el.textContent = value === null || value === undefined ? "" : String(value);
  if (cls) el.className = cls;
  return el;
}

function short(value) {
  return value && value.length > 14 ? value.slice(0, 8) + "…" + value.slice(-4) : value || "";
}

function when(seconds) {
  return seconds ? new Date(seconds * 1000).toISOString().replace(".000Z", "Z") : "";
}

async function getJson(path) {
  const response = await fetch(path, { credentials: "same-origin" });
  if (!response.ok) throw new Error(path + ": " + response.status);
  return response.json();
}

async function refreshStatus() {
  const s = await getJson("/api/status");
  document.getElementById("log-size").textContent = s.logSize;
  document.getElementById("verified").textContent = s.verified;
  const cp = s.latestCheckpoint;
  document.getElementById("checkpoint").textContent = cp ? cp.treeSize + " (block " + cp.block + ")" : "none";
  document.getElementById("checkpoint-age").textContent = cp ? cp.ageSeconds + " s" : "–";
  document.getElementById("lag").textContent = s.lag && s.lag.entries !== undefined ? s.lag.entries : 0;
  document.getElementById("sources").textContent = "api " + s.sources.api + ", chain " + s.sources.chain;
  const chart = document.getElementById("severity-chart");
  chart.replaceChildren();
  const most = Math.max(1, ...Object.values(s.findings));
  for (const severity of ["error", "review", "warning"]) {
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.append(text("span", severity, "name"));
    const fill = text("span", "", "fill " + severity);
    fill.style.width = (20 * s.findings[severity]) / most + "rem";
    bar.append(fill, text("span", s.findings[severity]));
    chart.append(bar);
  }
}

async function refreshAlerts() {
  const alerts = await getJson("/api/alerts?after=" + lastAlert);
  const body = document.querySelector("#alerts tbody");
  for (const a of alerts) {
    lastAlert = Math.max(lastAlert, a.id);
    const row = document.createElement("tr");
    row.className = "new alert";
    row.dataset.code = a.code;
    const severity = a.kind === "status" ? "status" : a.severity;
    const detail = a.kind === "status" ? a.source + (a.error ? ": " + a.error : "") : a.detail;
    row.append(text("td", a.id), text("td", when(a.at)), text("td", severity, "sev-" + severity),
      text("td", a.code), text("td", detail));
    body.prepend(row);
  }
}

async function refreshFindings() {
  const findings = await getJson("/api/findings");
  const body = document.querySelector("#findings-table tbody");
  body.replaceChildren();
  for (const f of findings) {
    const row = document.createElement("tr");
    row.append(text("td", f.severity, "sev-" + f.severity), text("td", f.code),
      text("td", short(f.eventId)), text("td", f.detail));
    body.append(row);
  }
}

async function decide(eventId, decision, note) {
  const response = await fetch("/api/emergencies/" + eventId, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ decision, note }),
  });
  if (!response.ok) {
    const problem = await response.json();
    alert(problem.detail);
  }
  await refreshEmergencies();
}

async function refreshEmergencies() {
  const items = await getJson("/api/emergencies");
  const body = document.querySelector("#emergency-table tbody");
  body.replaceChildren();
  for (const e of items) {
    const row = document.createElement("tr");
    row.dataset.eventId = e.eventId;
    const cell = document.createElement("td");
    if (e.decision) {
      cell.append(text("span", e.decision.decision + (e.decision.note ? " — " + e.decision.note : ""), "decision"));
    } else {
      const select = document.createElement("select");
      for (const d of ["justified", "not-justified", "referred"]) {
        const option = text("option", d);
        option.value = d;
        select.append(option);
      }
      const note = document.createElement("input");
      note.placeholder = "note";
      note.className = "note";
      const button = text("button", "Record decision");
      button.addEventListener("click", () => decide(e.eventId, select.value, note.value));
      cell.append(select, note, button);
    }
    row.append(text("td", when(e.occurredAt)), text("td", short(e.institution)),
      text("td", short(e.recordRef)), text("td", short(e.reasonHash)), cell);
    body.append(row);
  }
}

// A trail (a record's or a patient's) from `path`, shown with its verification result.
async function showTrail(path) {
  const result = document.getElementById("trail-result");
  const completeness = document.getElementById("trail-completeness");
  const problems = document.getElementById("trail-findings");
  const exports = document.getElementById("trail-exports");
  const body = document.querySelector("#trail-table tbody");
  body.replaceChildren();
  problems.replaceChildren();
  completeness.textContent = "";
  exports.hidden = true;
  result.textContent = "…";
  const response = await fetch(path, { credentials: "same-origin" });
  const data = await response.json();
  if (!response.ok) {
    result.textContent = data.detail;
    return;
  }
  const s = data.summary;
  result.textContent = data.events.length + " event(s): " + s.errors + " error(s), " + s.reviews + " to review";
  const subject = data.subject;
  if (subject.completeness) {
    completeness.textContent = "Complete: " + subject.completeness + " — from " + subject.source + ".";
  }
  for (const f of data.findings.filter((f) => !f.eventId)) {
    problems.append(text("li", f.severity + " " + f.code + ": " + f.detail, "sev-" + f.severity));
  }
  for (const e of data.events) {
    const row = document.createElement("tr");
    row.append(text("td", e.leafIndex), text("td", e.type), text("td", when(e.occurredAt)),
      text("td", short(e.recordRef)), text("td", short(e.institution)),
      text("td", e.result, "sev-" + e.result));
    body.append(row);
  }
  document.getElementById("trail-fhir").href = path + "?format=fhir";
  document.getElementById("trail-csv").href = path + "?format=csv";
  exports.hidden = false;
}

function showRecordTrail(event) {
  event.preventDefault();
  const ref = document.getElementById("record-ref").value.trim();
  return showTrail("/api/trail/" + encodeURIComponent(ref));
}

function showPatientTrail(event) {
  event.preventDefault();
  const address = document.getElementById("patient-address").value.trim();
  return showTrail("/api/patients/" + encodeURIComponent(address) + "/trail");
}

const SVG = "http://www.w3.org/2000/svg";
const TYPE_COLOURS = ["#17324d", "#3a7ca5", "#81c3d7", "#e08a00", "#b00020", "#5b8c5a", "#9c6ade"];

function svg(tag, attributes) {
  const el = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) el.setAttribute(name, value);
  return el;
}

// Events by type per day: a stacked bar chart in SVG (no library).
function dayChart(perDay, types) {
  const days = Object.keys(perDay).sort();
  const totals = days.map((d) => Object.values(perDay[d]).reduce((a, b) => a + b, 0));
  const most = Math.max(1, ...totals);
  const width = 40 + days.length * 28, height = 140;
  const chart = svg("svg", { width, height, role: "img", class: "day-chart" });
  chart.append(svg("line", { x1: 36, y1: 120, x2: width, y2: 120, stroke: "#5b6670" }));
  const top = svg("text", { x: 0, y: 12, "font-size": 10 });
  top.textContent = String(most);
  chart.append(top);
  days.forEach((day, i) => {
    let y = 120;
    types.forEach((type, t) => {
      const n = perDay[day][type] || 0;
      if (!n) return;
      const h = (100 * n) / most;
      y -= h;
      const bar = svg("rect", { x: 40 + i * 28, y, width: 20, height: h, fill: TYPE_COLOURS[t % TYPE_COLOURS.length] });
      const title = svg("title", {});
      title.textContent = day + " " + type + ": " + n;
      bar.append(title);
      chart.append(bar);
    });
    const label = svg("text", { x: 40 + i * 28, y: 134, "font-size": 9 });
    label.textContent = day.slice(5);
    chart.append(label);
  });
  return chart;
}

function rateBar(label, rate) {
  const bar = document.createElement("div");
  bar.className = "bar";
  bar.append(text("span", label, "name wide"));
  const fill = text("span", "", "fill review");
  fill.style.width = Math.min(20, 20 * rate) + "rem";
  bar.append(fill, text("span", (100 * rate).toFixed(1) + " %"));
  return bar;
}

async function refreshInstitutions() {
  const items = await getJson("/api/institutions");
  const box = document.getElementById("institution-charts");
  box.replaceChildren();
  const types = [...new Set(items.flatMap((i) => Object.values(i.perDay).flatMap((d) => Object.keys(d))))].sort();
  const legend = document.createElement("p");
  legend.className = "legend";
  types.forEach((type, t) => {
    const swatch = text("span", "■ ", "swatch");
    swatch.style.color = TYPE_COLOURS[t % TYPE_COLOURS.length];
    legend.append(swatch, text("span", type + "  "));
  });
  box.append(legend);
  for (const item of items) {
    const card = document.createElement("div");
    card.className = "institution";
    card.dataset.institution = item.institution;
    card.append(text("h3", item.institution));
    card.append(dayChart(item.perDay, types));
    card.append(rateBar("emergency", item.emergencyRate), rateBar("not covered", item.notCoveredRate));
    const delay = item.anchoringDelay;
    card.append(text("p", delay ? "anchoring delay: mean " + delay.mean + " s, worst " + delay.max + " s" : "not anchored yet", "delay"));
    box.append(card);
  }
}

function show(view) {
  for (const section of document.querySelectorAll("section.view")) section.hidden = section.id !== view;
  for (const button of document.querySelectorAll("nav button")) button.classList.toggle("active", button.dataset.view === view);
  if (view === "findings") refreshFindings();
  if (view === "emergencies") refreshEmergencies();
  if (view === "institutions") refreshInstitutions();
}

async function tick() {
  try {
    await refreshStatus();
    await refreshAlerts();
  } catch (error) {
    document.getElementById("sources").textContent = "console: " + error.message;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll("nav button")) {
    button.addEventListener("click", () => show(button.dataset.view));
  }
  document.getElementById("trail-form").addEventListener("submit", showRecordTrail);
  document.getElementById("patient-form").addEventListener("submit", showPatientTrail);
  tick();
  setInterval(tick, 1000);
});
