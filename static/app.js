/* The SOP engine's page: plain JavaScript over the JSON API and the Socket.IO feed. */
"use strict";

const SOP = (() => {
  const TERMINAL = new Set(["completed", "failed", "skipped", "blocked"]);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "text") node.textContent = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : value);
    }
    for (const child of children) if (child !== null && child !== undefined) node.append(child);
    return node;
  }

  async function api(method, path, body) {
    const options = { method, credentials: "same-origin", headers: {} };
    if (body instanceof FormData) options.body = body;
    else if (typeof body === "string") { options.body = body; options.headers["Content-Type"] = "application/yaml"; }
    else if (body !== undefined) { options.body = JSON.stringify(body); options.headers["Content-Type"] = "application/json"; }
    const response = await fetch(path, options);
    let data = null;
    try { data = await response.json(); } catch (_) { data = null; }
    return { ok: response.ok, status: response.status, data };
  }

  function problemsList(data) {
    const list = el("ul", { class: "problems" });
    for (const p of (data && data.problems) || []) list.append(el("li", { text: p.where ? `${p.where}: ${p.message}` : p.message }));
    return el("div", { class: "error" }, el("p", { text: (data && data.error) || "refused" }), list);
  }

  function seconds(ms) { return ms === null || ms === undefined ? "" : ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`; }

  // SOP list and upload --------------------------------------------------------------------

  function uploadForm(form) {
    const result = document.getElementById("upload-result");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const file = form.elements.file.files[0];
      let body;
      if (file) { body = new FormData(); body.append("file", file); } else body = form.elements.text.value;
      const reply = await api("POST", "/api/sops", body);
      result.replaceChildren(reply.ok
        ? el("p", { class: "ok" }, "Stored ", el("a", { href: `/sops/${reply.data.id}`, text: `${reply.data.id} v${reply.data.version}` }))
        : problemsList(reply.data));
      if (reply.ok) setTimeout(() => location.reload(), 600);
    });
  }

  // inputs form ---------------------------------------------------------------------------

  function readInput(field) {
    const type = field.dataset.type;
    if (type === "boolean") return field.checked;
    const text = field.value;
    if (text === "") return undefined;
    if (type === "integer") return Number.isInteger(Number(text)) ? Number(text) : text;
    if (type === "number") return Number.isNaN(Number(text)) ? text : Number(text);
    if (type === "list" || type === "dict") { try { return JSON.parse(text); } catch (_) { return text; } }
    return text;
  }

  function runForm(form) {
    const result = document.getElementById("run-result");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const inputs = {};
      for (const field of form.querySelectorAll("[data-type]")) {
        const value = readInput(field);
        if (value !== undefined) inputs[field.name] = value;
      }
      const body = { sop_id: form.dataset.sop, inputs, priority: form.elements.__priority.value };
      const reply = await api("POST", "/api/runs", body);
      if (reply.ok) location.href = `/runs/${reply.data.id}`;
      else result.replaceChildren(problemsList(reply.data));
    });
  }

  // the feed -------------------------------------------------------------------------------

  function connect(onConnect) {
    const socket = io({ transports: ["websocket", "polling"] });
    socket.on("connect", onConnect);
    socket.on("connect_error", (err) => console.warn("live feed:", err.message));
    return socket;
  }

  // runs list ------------------------------------------------------------------------------

  function runsPage(tbody) {
    const rows = new Map();
    function upsert(run) {
      let row = rows.get(run.id);
      if (!row) {
        row = el("tr", { "data-run": run.id },
          el("td", {}, el("a", { href: `/runs/${run.id}`, text: run.id.slice(0, 8) })),
          el("td", { text: run.sop_id || "" }), el("td", {}, el("span", { class: "badge" })),
          el("td", { text: run.priority || "" }), el("td", { text: run.created_at ? new Date(run.created_at).toLocaleString() : "" }));
        rows.set(run.id, row);
        tbody.prepend(row);
      }
      if (run.status) {
        const badge = row.querySelector(".badge");
        badge.textContent = run.status; badge.className = `badge ${run.status}`;
      }
    }
    async function load() {
      const reply = await api("GET", "/api/runs?limit=200");
      if (!reply.ok) return;
      for (const run of reply.data.runs.slice().reverse()) upsert(run);
    }
    const socket = connect(async () => { await load(); socket.emit("subscribe", { all: true }); });
    socket.on("run.updated", (event) => {
      if (event.data.status) upsert({ id: event.run_id, status: event.data.status, sop_id: event.data.sop_id });
    });
  }

  // one run --------------------------------------------------------------------------------

  function runPage(runId) {
    const tbody = document.querySelector("#steps tbody");
    const statusBadge = document.getElementById("run-status");
    const message = document.getElementById("message");
    const rows = new Map();
    let seq = -1;
    let loading = null;

    function say(text, bad) { message.textContent = text; message.className = bad ? "error" : ""; }

    async function control(path) {
      const reply = await api("POST", path);
      say(reply.ok ? "" : (reply.data && reply.data.error) || `refused (${reply.status})`, !reply.ok);
      return reply;
    }

    function depth(key) { return (key.match(/\]\./g) || []).length; }

    function stepRow(step) {
      const buttons = el("td", { class: "step-actions" },
        el("button", { "data-step-action": "skip", title: "skip this step", text: "skip" }),
        el("button", { "data-step-action": "retry", title: "run this failed step again", text: "retry" }),
        el("button", { "data-step-action": "rerun", title: "run this step and what needs it again", text: "rerun" }),
        el("button", { "data-step-action": "breakpoint", title: "pause before this step", text: "●" }));
      const row = el("tr", { "data-key": step.key, class: `depth-${depth(step.key)}` },
        el("td", { class: "key" }, el("code", { text: step.key }), el("div", { class: "detail" })),
        el("td", {}, el("span", { class: "badge" })), el("td", { class: "attempts" }), el("td", { class: "time" }), buttons);
      buttons.addEventListener("click", async (event) => {
        const action = event.target.dataset.stepAction;
        if (!action) return;
        const path = `/api/runs/${runId}/steps/${encodeURIComponent(step.key)}/${action}`;
        if (action === "breakpoint") {
          const on = !row.classList.contains("breakpoint");
          const reply = await api("POST", path, { on });
          if (reply.ok) row.classList.toggle("breakpoint", on); else say(reply.data.error, true);
        } else await control(path);
      });
      return row;
    }

    function place(step) {
      const row = stepRow(step);
      rows.set(step.key, row);
      const parent = step.parent ? rows.get(step.parent) : null;
      if (!parent) { tbody.append(row); return row; }
      // after the parent's last descendant, so iterations stay grouped under their loop
      let after = parent;
      while (after.nextElementSibling && after.nextElementSibling.dataset.key.startsWith(step.parent)
             && after.nextElementSibling.dataset.key !== step.parent) after = after.nextElementSibling;
      after.after(row);
      return row;
    }

    function showStep(data) {
      const row = rows.get(data.key);
      if (!row) return false;
      if (data.status) {
        const badge = row.querySelector(".badge");
        badge.textContent = data.status; badge.className = `badge ${data.status}`;
        row.dataset.status = data.status;
      }
      const attempts = data.attempts ?? data.attempt;
      if (attempts) row.querySelector(".attempts").textContent = attempts;
      if (data.duration_ms !== undefined) row.querySelector(".time").textContent = seconds(data.duration_ms);
      const detail = row.querySelector(".detail");
      if (data.status === "running" || data.status === "pending") detail.replaceChildren();
      if (data.error) detail.replaceChildren(el("div", { class: "error", text: data.error.message || String(data.error) }));
      if (data.reason && TERMINAL.has(data.status)) detail.replaceChildren(el("div", { class: "reason", text: data.reason }));
      const shots = (data.artifacts || []).map((p) => p.startsWith("/api/") ? p : `/api/artifacts/${p}`);
      const failure = shots.find((p) => p.endsWith("failure.png"));
      if (failure) detail.append(el("img", { class: "screenshot", src: failure, alt: `the page when ${data.key} failed` }));
      return true;
    }

    function showRun(run) {
      if (run.status) { statusBadge.textContent = run.status; statusBadge.className = `badge ${run.status}`; }
      if (run.outputs !== undefined && run.outputs !== null) document.getElementById("outputs").textContent = JSON.stringify(run.outputs, null, 2);
      if (run.error !== undefined) document.getElementById("run-error").textContent = run.error || "";
      if (run.waiting !== undefined) showWaiting(run.waiting);
      for (const key of run.breakpoints || []) { const row = rows.get(key); if (row) row.classList.add("breakpoint"); }
    }

    function showWaiting(waiting) {
      const box = document.getElementById("waiting");
      box.replaceChildren();
      if (!waiting) return;
      box.append(el("p", { class: `waiting ${waiting.kind}`, text: waiting.reason }));
      if (!waiting.form) return;
      const form = el("form", { id: "human-form" });
      if (waiting.form.message) form.append(el("p", { text: waiting.form.message }));
      for (const [name, spec] of Object.entries(waiting.form.fields || {})) {
        const type = spec.type === "boolean" ? "checkbox" : spec.secret ? "password" : spec.type === "string" ? "text" : "number";
        form.append(el("label", {}, `${spec.label || name} `, el("input", { name, type, "data-type": spec.type, autocomplete: "off" })));
      }
      form.append(el("button", { type: "submit", text: waiting.kind === "approval" ? "Send" : "Submit" }));
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        const values = {};
        for (const field of form.querySelectorAll("[data-type]")) { const v = readInput(field); if (v !== undefined) values[field.name] = v; }
        const reply = await api("POST", `/api/runs/${runId}/steps/${encodeURIComponent(waiting.key)}/submit`, { values });
        if (!reply.ok) say(reply.data.error, true);
      });
      box.append(form);
    }

    function log(text, cls) {
      document.getElementById("log").append(el("li", { class: cls || "", text }));
    }

    async function load() {
      if (loading) return loading;
      loading = (async () => {
        const reply = await api("GET", `/api/runs/${runId}`);
        if (!reply.ok) { say("cannot load the run", true); return; }
        const run = reply.data;
        tbody.replaceChildren(); rows.clear();
        for (const step of run.steps) { place(step); showStep(step); }
        showRun(run);
        // what is done already, also when the run ended before this page subscribed (live events go on from here)
        const ended = run.steps.filter((s) => ["completed", "failed", "skipped", "blocked"].includes(s.status)).length;
        showProgress(ended, run.steps.length, null);
        seq = run.seq;
        document.body.dataset.seq = seq;
      })();
      try { await loading; } finally { loading = null; }
    }

    function apply(event) {
      const data = event.data;
      switch (event.type) {
        case "steps.added":
          for (const key of data.keys) if (!rows.has(key)) { place({ key, parent: data.parent }); showStep({ key, status: "pending" }); }
          break;
        case "step.updated": showStep(data); break;
        case "step.retried":
          showStep({ key: data.key, attempts: data.attempt + 1 });
          log(`${data.key}: attempt ${data.attempt} failed (${data.error ? data.error.message : ""}); retrying`, "retry");
          break;
        case "log": log(`${data.key}: ${data.message}`, data.level); break;
        case "control": log(`${data.who}: ${data.control}${data.target ? " " + data.target : ""}`, "control"); break;
        default: showRun(data);
      }
    }

    async function receive(event) {
      if (event.run_id !== runId || seq < 0) return;
      if (event.seq <= seq) return;  // already applied
      if (event.seq > seq + 1) { await load(); return; }  // a gap: fetch the whole run again
      apply(event);
      seq = event.seq;
      document.body.dataset.seq = seq;
    }

    document.querySelector(".toolbar").addEventListener("click", (event) => {
      const action = event.target.dataset.runAction;
      if (action) control(`/api/runs/${runId}/${action}`);
    });

    const socket = connect(async () => {
      await load();
      socket.emit("subscribe", { run_id: runId, since: seq });
    });
    for (const name of ["run.updated", "step.updated", "log"]) socket.on(name, receive);
    function showProgress(completed, total, etaSeconds) {
      document.getElementById("progress-bar").style.width = `${total ? (100 * completed / total) : 0}%`;
      const eta = etaSeconds === null || etaSeconds === undefined ? "" : `, about ${Math.ceil(etaSeconds)} s left`;
      document.getElementById("progress-text").textContent = `${completed} of ${total} steps${eta}`;
    }
    socket.on("progress", (p) => { if (p.run_id === runId) showProgress(p.completed, p.total, p.eta_s); });
    socket.on("frame", (f) => {
      if (f.run_id !== runId) return;
      const img = document.getElementById("frame");
      img.src = f.image; img.hidden = false; img.dataset.key = f.key;
      document.getElementById("no-frame").hidden = true;
    });
  }

  // batches --------------------------------------------------------------------------------

  function batchForm(form) {
    const result = document.getElementById("batch-result");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const body = new FormData();
      body.append("sop_id", form.dataset.sop);
      body.append("file", form.elements.file.files[0]);
      body.append("concurrency", form.elements.concurrency.value);
      const reply = await api("POST", "/api/batches", body);
      if (reply.ok) location.href = `/batches/${reply.data.id}`;
      else result.replaceChildren(problemsList(reply.data));
    });
  }

  function batchPage(batchId) {
    const tbody = document.querySelector("#rows tbody");
    const filter = document.getElementById("status-filter");
    let timer = null;

    function show(batch) {
      const c = batch.counts;
      const ended = c.completed + c.failed + c.cancelled + c.invalid;
      const badge = document.getElementById("batch-status");
      badge.textContent = batch.status; badge.className = `badge ${batch.status}`;
      document.getElementById("progress-bar").style.width = `${batch.rows ? (100 * ended / batch.rows) : 0}%`;
      const eta = batch.eta_s ? `, about ${Math.ceil(batch.eta_s)} s left` : "";
      document.getElementById("counts").textContent =
        `${ended} of ${batch.rows} rows: ${c.completed} completed, ${c.failed} failed, ${c.running} running, ` +
        `${c.queued} queued, ${c.invalid} invalid, ${c.cancelled} cancelled; ${batch.rate_per_s} rows/s${eta}`;
      tbody.replaceChildren(...batch.rows_page.map((row) => el("tr", { "data-row": row.row, "data-status": row.status },
        el("td", { text: row.row }), el("td", {}, el("span", { class: `badge ${row.status}`, text: row.status })),
        el("td", { class: "outputs", text: row.outputs ? JSON.stringify(row.outputs) : "" }),
        el("td", { class: "error", text: row.error || "" }),
        el("td", {}, row.run_id ? el("a", { href: `/runs/${row.run_id}`, text: row.run_id.slice(0, 8) }) : ""))));
    }

    async function load() {
      const status = filter.value ? `&status=${encodeURIComponent(filter.value)}` : "";
      const reply = await api("GET", `/api/batches/${batchId}?limit=1000${status}`);
      if (reply.ok) show(reply.data);
      document.body.dataset.loaded = String(Date.now());
    }

    function soon() {  // at most a refresh every 300 ms, however many runs report
      if (timer) return;
      timer = setTimeout(() => { timer = null; load(); }, 300);
    }

    filter.addEventListener("change", load);
    document.querySelector(".toolbar").addEventListener("click", async (event) => {
      const action = event.target.dataset.batchAction;
      if (!action) return;
      const reply = await api("POST", `/api/batches/${batchId}/${action}`);
      const message = document.getElementById("message");
      message.textContent = reply.ok ? "" : reply.data.error; message.className = reply.ok ? "" : "error";
      load();
    });
    const socket = connect(async () => { await load(); socket.emit("subscribe", { all: true }); });
    socket.on("run.updated", (event) => { if (event.data.batch_id === batchId) soon(); });
  }

  // the sign-in URL carries a token: take it out of the address bar and history at once, then sign in by POST
  function loginPage(form) {
    const next = new URLSearchParams(location.search).get("next");
    history.replaceState(null, "", "/login" + (next ? "?next=" + encodeURIComponent(next) : ""));
    if (form.dataset.auto) form.submit();
  }

  return { api, uploadForm, runForm, runsPage, runPage, batchForm, batchPage, loginPage };
})();
