// claimflow investigators' page. Every value from the API reaches the DOM through
// textContent or SVG attributes set from numbers; nothing is ever parsed as markup.
"use strict";

(function () {
  const body = document.body;
  const REFRESH_MS = Number(body.dataset.refreshMs) || 2000;
  const QUEUE_SIZE = 25;
  const SVG_NS = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);
  let queueCursor = null;
  let timer = null;
  let knownQueue = new Set();
  const DISPOSITIONS = [["fraud", "fraud"], ["legitimate", "legitimate"], ["needs_info", "needs info"]];
  // Notes typed in the queue survive its refreshes (rows are rebuilt every few seconds).
  const noteDrafts = new Map();
  // The last refusal per claim (e.g. a 503), shown again when the rows are rebuilt.
  const dispositionErrors = new Map();

  // -- helpers ---------------------------------------------------------------------------

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function apiKey() {
    const input = $("api-key");
    return input ? input.value : "";
  }

  async function api(path, options) {
    const opts = Object.assign({ headers: {} }, options || {});
    const key = apiKey();
    if (key) opts.headers["X-API-Key"] = key;
    let response;
    try {
      response = await fetch(path, opts);
    } catch (err) {
      return { ok: false, status: 0, body: { title: "network error", detail: String(err) } };
    }
    let data = null;
    const type = response.headers.get("Content-Type") || "";
    if (type.includes("json")) {
      try { data = await response.json(); } catch (err) { data = null; }
    }
    return { ok: response.ok, status: response.status, body: data };
  }

  function problemText(result) {
    const p = result.body || {};
    const lines = [`${result.status} ${p.title || "error"}`];
    if (p.detail) lines.push(p.detail);
    for (const err of p.errors || []) lines.push(`  ${err.path || "(body)"}: ${err.msg}`);
    return lines.join("\n");
  }

  function fmtInt(n) { return Number(n).toLocaleString("en-US"); }
  function fmtScore(x) { return Number(x).toFixed(3); }
  function fmtRate(r) { return r === null || r === undefined ? "-" : `${(100 * r).toFixed(1)}%`; }
  function fmtTime(iso) {
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleTimeString();
  }

  function reasonsList(reasons) {
    const list = el("ul");
    for (const reason of reasons || []) list.appendChild(el("li", reason.message));
    return list;
  }

  function setStatus(text, state) {
    const pill = $("live-status");
    pill.textContent = text;
    pill.className = `pill ${state || ""}`;
  }

  // -- totals, chart, per model ----------------------------------------------------------

  function renderTotals(totals) {
    $("total-count").textContent = fmtInt(totals.total);
    $("approve-count").textContent = fmtInt(totals.approve);
    $("investigate-count").textContent = fmtInt(totals.investigate);
    $("investigation-rate").textContent = fmtRate(totals.investigation_rate);
  }

  function renderChart(stats) {
    const chart = $("timeline");
    clear(chart);
    const W = 720, H = 180, left = 36, bottom = 18, top = 8;
    const buckets = stats.timeline;
    const max = Math.max(1, ...buckets.map((b) => b.total));
    const slot = (W - left) / Math.max(1, buckets.length);
    const scale = (H - bottom - top) / max;
    chart.appendChild(svg("line", { x1: left, y1: H - bottom, x2: W, y2: H - bottom, class: "axis" }));
    chart.appendChild(svg("text", { x: 2, y: top + 8, class: "axis-label" }, fmtInt(max)));
    chart.appendChild(svg("text", { x: 2, y: H - bottom, class: "axis-label" }, "0"));
    const ratePoints = [];
    buckets.forEach((b, i) => {
      const x = left + i * slot + 1;
      const w = Math.max(1, slot - 2);
      const hA = b.approve * scale, hI = b.investigate * scale;
      const group = svg("g");
      group.appendChild(svg("title", {}, `${fmtTime(b.start)}: ${b.approve} approved, ${b.investigate} to investigate`));
      group.appendChild(svg("rect", { x, y: H - bottom - hA, width: w, height: hA, class: "bar-approve" }));
      group.appendChild(svg("rect", { x, y: H - bottom - hA - hI, width: w, height: hI, class: "bar-investigate" }));
      chart.appendChild(group);
      if (b.investigation_rate !== null) {
        ratePoints.push(`${x + w / 2},${(H - bottom - (H - bottom - top) * b.investigation_rate).toFixed(1)}`);
      }
    });
    if (ratePoints.length > 1) {
      const line = svg("polyline", { points: ratePoints.join(" "), class: "rate-line" });
      line.appendChild(svg("title", {}, "investigation rate (0-100% of the height)"));
      chart.appendChild(line);
    }
    if (buckets.length) {
      chart.appendChild(svg("text", { x: left, y: H - 4, class: "axis-label" }, fmtTime(buckets[0].start)));
      chart.appendChild(svg("text", { x: W - 60, y: H - 4, class: "axis-label" }, "now"));
    }
    $("chart-range").textContent = `${buckets.length} x ${stats.bucket_s} s`;
  }

  function renderByModel(rows) {
    const tbody = $("by-model").querySelector("tbody");
    clear(tbody);
    for (const row of rows) {
      const tr = el("tr");
      tr.appendChild(el("td", row.model_name));
      tr.appendChild(el("td", row.model_version));
      tr.appendChild(el("td", fmtInt(row.approve), "num"));
      tr.appendChild(el("td", fmtInt(row.investigate), "num"));
      tr.appendChild(el("td", fmtRate(row.investigation_rate), "num"));
      tbody.appendChild(tr);
    }
  }

  // -- shadow scoring --------------------------------------------------------------------

  function precisionText(model) {
    if (model.precision === null) return `- (${fmtInt(model.investigate)} flagged, none labelled)`;
    return `${fmtRate(model.precision)} (${fmtInt(model.fraud)} / ${fmtInt(model.labelled)})`;
  }

  function renderShadow(body) {
    const table = $("shadow");
    const tbody = table.querySelector("tbody");
    clear(tbody);
    table.hidden = body.pairs.length === 0;
    $("shadow-none").hidden = body.pairs.length !== 0;
    for (const pair of body.pairs) {
      const tr = el("tr");
      tr.appendChild(el("td", `${pair.champion.name} v${pair.champion.version}`));
      tr.appendChild(el("td", `${pair.challenger.name} v${pair.challenger.version}`));
      tr.appendChild(el("td", fmtInt(pair.claims), "num"));
      tr.appendChild(el("td", fmtRate(pair.agreement), "num shadow-agreement"));
      tr.appendChild(el("td", precisionText(pair.champion), "num"));
      tr.appendChild(el("td", precisionText(pair.challenger), "num"));
      tr.appendChild(el("td", fmtInt(pair.challenger.investigate_unlabelled), "num"));
      tr.appendChild(el("td", pair.challenger_precision_bound === null ? "-"
        : `${fmtRate(pair.challenger_precision_bound)} (${fmtInt(pair.challenger_unseen)} unseen)`,
        "num shadow-bound"));
      tr.appendChild(el("td", `${fmtTime(pair.first_decided_at)} - ${fmtTime(pair.last_decided_at)}`));
      tbody.appendChild(tr);
    }
  }

  // -- investigation queue ---------------------------------------------------------------

  function queueRow(item) {
    const d = item.decision;
    const c = d.claim;
    const tr = el("tr");
    tr.dataset.claimId = c.claim_id;
    tr.appendChild(el("td", c.claim_id, "claim-id"));
    tr.appendChild(el("td", Number(c.claim_amount).toLocaleString("en-US", { maximumFractionDigits: 2 }), "num"));
    tr.appendChild(el("td", c.num_services, "num"));
    tr.appendChild(el("td", c.patient_age, "num"));
    tr.appendChild(el("td", c.provider_id, "num"));
    // Contract version 2 has a member and lines; version 1 the days since the last claim.
    const v2 = c.schema_version === 2;
    tr.appendChild(el("td", v2 ? c.member_id : "\u2014", "claim-id"));
    tr.appendChild(el("td", v2 ? c.lines.length : "\u2014", "num"));
    tr.appendChild(el("td", v2 ? "\u2014" : c.days_since_last_claim, "num"));
    tr.appendChild(el("td", fmtScore(d.anomaly_score), "num"));
    tr.appendChild(el("td", `${d.model.name} v${d.model.version}`, "model"));
    const reasons = el("td", null, "reasons");
    reasons.appendChild(reasonsList(d.reasons));
    tr.appendChild(reasons);
    tr.appendChild(el("td", fmtTime(d.decided_at)));
    tr.appendChild(dispositionCell(c.claim_id, item.label));
    return tr;
  }

  // -- dispositions ----------------------------------------------------------------------

  function labelText(label) {
    const box = el("span");
    if (!label) {
      box.appendChild(el("span", "open", "label-open"));
      return box;
    }
    box.appendChild(el("span", label.disposition.replace("_", " "), `label-${label.disposition}`));
    box.appendChild(el("span", ` by ${label.investigator}` + (label.note ? `: ${label.note}` : "")));
    return box;
  }

  function dispositionCell(claimId, label) {
    const td = el("td", null, "disposition");
    const current = el("div", null, "current");
    current.appendChild(labelText(label));
    td.appendChild(current);
    const note = el("input", null, "note");
    note.placeholder = "note";
    note.maxLength = 2000;
    note.value = noteDrafts.get(claimId) || "";
    note.addEventListener("input", () => noteDrafts.set(claimId, note.value));
    td.appendChild(note);
    for (const [value, text] of DISPOSITIONS) {
      const button = el("button", text, `set-${value}`);
      button.type = "button";
      button.dataset.disposition = value;
      button.addEventListener("click", () => dispose(claimId, value, td));
      td.appendChild(button);
    }
    if (dispositionErrors.has(claimId)) td.appendChild(el("span", dispositionErrors.get(claimId), "label-error"));
    return td;
  }

  function showDispositionError(claimId, td, text) {
    dispositionErrors.set(claimId, text);
    const old = td.querySelector(".label-error");
    if (old) old.remove();
    td.appendChild(el("span", text, "label-error"));
  }

  async function dispose(claimId, disposition, td) {
    const investigator = $("investigator").value.trim();
    if (!investigator) {
      showDispositionError(claimId, td, "enter your name (investigator, top right) first");
      return;
    }
    const note = td.querySelector("input.note").value;
    const r = await api(`/api/v1/claims/${encodeURIComponent(claimId)}/disposition`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ disposition, note, investigator }),
    });
    if (r.ok) {
      noteDrafts.delete(claimId);
      dispositionErrors.delete(claimId);
      const old = td.querySelector(".label-error");
      if (old) old.remove();
      td.querySelector("input.note").value = "";
      const current = td.querySelector(".current");
      clear(current);
      current.appendChild(labelText(r.body));
    } else {
      showDispositionError(claimId, td, problemText(r));
    }
  }

  function queueQuery() {
    return `decision=investigate&status=${encodeURIComponent($("queue-filter").value)}&limit=${QUEUE_SIZE}`;
  }

  function editingQueue() {
    // Rebuilding the rows while someone types a note would take the text box away.
    const active = document.activeElement;
    return active && active.classList && active.classList.contains("note") && $("queue").contains(active);
  }

  function renderQueue(page, append) {
    const tbody = $("queue").querySelector("tbody");
    if (!append) clear(tbody);
    const seen = new Set();
    for (const item of page.items) {
      const row = queueRow(item);
      if (!append && knownQueue.size && !knownQueue.has(item.decision.claim.claim_id)) row.classList.add("fresh");
      seen.add(item.decision.claim.claim_id);
      tbody.appendChild(row);
    }
    if (!append) knownQueue = seen;
    queueCursor = page.next_cursor;
    $("queue-more").hidden = !queueCursor;
  }

  async function loadOlder() {
    if (!queueCursor) return;
    const r = await api(`/api/v1/outcomes?${queueQuery()}&cursor=${encodeURIComponent(queueCursor)}`);
    if (r.ok) renderQueue(r.body, true);
  }

  // -- refresh loop ----------------------------------------------------------------------

  async function refresh() {
    const [stats, queue, shadow] = await Promise.all([
      api("/api/v1/stats?bucket_s=10&buckets=36"),
      api(`/api/v1/outcomes?${queueQuery()}`),
      api("/api/v1/shadow"),
    ]);
    if (shadow.ok) renderShadow(shadow.body);
    if (stats.ok && queue.ok) {
      renderTotals(stats.body.totals);
      renderChart(stats.body);
      renderByModel(stats.body.by_model);
      if (!editingQueue()) renderQueue(queue.body, false);
      setStatus(`updated ${new Date().toLocaleTimeString()}`, "live");
    } else {
      setStatus(problemText(stats.ok ? queue : stats).split("\n")[0], "error");
    }
  }

  function schedule() {
    clearTimeout(timer);
    if (!$("live-toggle").checked) {
      setStatus("paused");
      return;
    }
    timer = setTimeout(async () => {
      if (!document.hidden) await refresh();
      schedule();
    }, REFRESH_MS);
  }

  // -- lookup ----------------------------------------------------------------------------

  function decisionBlock(decision, replayed) {
    const box = el("div");
    const head = el("div");
    head.appendChild(el("span", decision.decision, `decision-${decision.decision}`));
    head.appendChild(el("span", ` ${decision.claim.claim_id}  score ${fmtScore(decision.anomaly_score)}` +
      ` (threshold ${fmtScore(decision.threshold)})  model ${decision.model.name} v${decision.model.version}` +
      (replayed ? "  (already decided earlier)" : "")));
    box.appendChild(head);
    box.appendChild(reasonsList(decision.reasons));
    return box;
  }

  async function lookup(event) {
    event.preventDefault();
    const out = $("lookup-result");
    const id = $("lookup-id").value.trim();
    clear(out);
    out.className = "result";
    const r = await api(`/api/v1/claims/${encodeURIComponent(id)}`);
    if (r.status === 202) {
      out.textContent = pendingText(r.body);
    } else if (r.ok) {
      out.appendChild(decisionBlock(r.body, false));
    } else {
      out.className = "result error";
      out.appendChild(el("div", `lookup of "${id}" failed`));
      out.appendChild(el("div", problemText(r)));
    }
  }

  // -- submit one ------------------------------------------------------------------------

  function formClaim(form) {
    const claim = {};
    for (const input of form.querySelectorAll("input")) {
      const value = input.value.trim();
      if (value === "") continue;
      claim[input.name] = input.type === "number" ? Number(value) : value;
    }
    return claim;
  }

  async function submitOne(event) {
    event.preventDefault();
    const out = $("submit-result");
    clear(out);
    out.className = "result";
    const r = await api("/api/v1/claims", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(formClaim(event.target)),
    });
    if (r.status === 202) {
      out.textContent = pendingText(r.body);
    } else if (r.ok) {
      out.appendChild(decisionBlock(r.body, r.status === 200));
      refresh();
    } else {
      out.className = "result error";
      out.textContent = problemText(r);
    }
  }

  // A claim handed to the stream and not decided within the gateway's deadline (202).
  function pendingText(body) {
    return `${body.claim_id}: handed to the stream, not decided yet; look it up again shortly`;
  }

  // -- CSV upload ------------------------------------------------------------------------

  async function uploadCsv(event) {
    event.preventDefault();
    const file = $("csv-file").files[0];
    const summary = $("csv-summary");
    const table = $("csv-results");
    const tbody = table.querySelector("tbody");
    clear(summary);
    clear(tbody);
    table.hidden = true;
    if (!file) return;
    summary.className = "result";
    summary.textContent = `uploading ${file.name} ...`;
    const r = await api("/api/v1/claims/csv", {
      method: "POST", headers: { "Content-Type": "text/csv" }, body: await file.text(),
    });
    if (!r.ok) {
      summary.className = "result error";
      summary.textContent = problemText(r);
      return;
    }
    const pending = r.body.rows.filter((row) => row.pending).length;
    summary.textContent = `${file.name}: ${r.body.accepted - pending} decided, ` +
      (pending ? `${pending} pending, ` : "") + `${r.body.rejected} rejected`;
    for (const row of r.body.rows) {
      const tr = el("tr");
      tr.appendChild(el("td", row.line, "num"));
      tr.appendChild(el("td", row.claim_id || ""));
      if (row.decision) {
        tr.appendChild(el("td", row.decision.decision + (row.replayed ? " (earlier)" : ""),
          `decision-${row.decision.decision}`));
        tr.appendChild(el("td", fmtScore(row.decision.anomaly_score), "num"));
        const reasons = el("td");
        reasons.appendChild(reasonsList(row.decision.reasons));
        tr.appendChild(reasons);
      } else if (row.pending) {
        tr.appendChild(el("td", "pending"));
        tr.appendChild(el("td", ""));
        tr.appendChild(el("td", "not decided yet: look it up shortly"));
      } else {
        tr.appendChild(el("td", "rejected", "decision-investigate"));
        tr.appendChild(el("td", ""));
        tr.appendChild(el("td", row.error));
      }
      tbody.appendChild(tr);
    }
    table.hidden = false;
    refresh();
  }

  // -- wiring ----------------------------------------------------------------------------

  function start() {
    const keyInput = $("api-key");
    if (keyInput) {
      keyInput.value = sessionStorage.getItem("claimflow-api-key") || "";
      keyInput.addEventListener("change", () => {
        sessionStorage.setItem("claimflow-api-key", keyInput.value);
        refresh();
      });
    }
    $("lookup-form").addEventListener("submit", lookup);
    $("submit-form").addEventListener("submit", submitOne);
    $("csv-form").addEventListener("submit", uploadCsv);
    $("queue-more").addEventListener("click", loadOlder);
    const who = $("investigator");
    who.value = localStorage.getItem("claimflow-investigator") || "";
    who.addEventListener("change", () => localStorage.setItem("claimflow-investigator", who.value.trim()));
    $("queue-filter").addEventListener("change", () => refresh());
    $("live-toggle").addEventListener("change", () => { if ($("live-toggle").checked) refresh(); schedule(); });
    refresh().then(schedule);
  }

  start();
})();
