/* The SOP engine's page: plain JavaScript over the JSON API and the Socket.IO feed. */
"use strict";

const SOP = (() => {

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
    let response;
    try {
      response = await fetch(path, options);
    } catch (_) {  // no answer at all: the server is down or the network is gone
      return { ok: false, status: 0, data: { error: "the server cannot be reached" } };
    }
    if (response.status === 401) signedOut();
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

  function banner(id, on) { document.getElementById(id).hidden = !on; }

  function signedOut() {  // the token of this browser is refused: the page says so, and where to sign in again
    document.getElementById("sign-in-again").setAttribute("href", `/login?next=${encodeURIComponent(location.pathname)}`);
    banner("offline", false);
    banner("signed-out", true);
  }

  function connect(onConnect) {
    const socket = io({ transports: ["websocket", "polling"] });
    socket.on("connect", () => { banner("offline", false); onConnect(); });
    socket.on("disconnect", (reason) => { if (reason !== "io client disconnect") banner("offline", true); });
    socket.on("connect_error", (err) => {
      if (socket.active) { banner("offline", true); return; }  // the client tries again by itself
      if (/unauthori[sz]ed/i.test(err.message)) { signedOut(); return; }  // refused: it does not try again
      banner("offline", true);
      setTimeout(() => socket.connect(), 2000);  // refused for now (the database is unavailable): try again
    });
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

  const STEP_ENDED = new Set(["completed", "failed", "skipped", "blocked", "cancelled"]);
  const RUN_ENDED = new Set(["completed", "failed", "cancelled"]);
  const STEP_CONTROLS = {
    skip: { text: "skip", title: "skip this step" },
    retry: { text: "retry", title: "run this failed step again" },
    rerun: { text: "rerun", title: "run this step and what needs it again" },
    breakpoint: { text: "●", title: "pause before this step" },
  };
  const EVENT_PAGE = 1000;  // events read per request when catching up
  const PICTURE = /\.(png|jpe?g|gif|webp)$/i;

  function stepIdOf(key) { return key.split(".").pop().replace(/\[\d+\]$/, ""); }
  function moment(iso) { return iso ? new Date(iso).toLocaleString() : ""; }
  function json(value) { return JSON.stringify(value, null, 2); }
  function artifactUrl(path) { return path.startsWith("/api/") ? path : `/api/artifacts/${path}`; }
  function problem(reply) { return (reply.data && reply.data.error) || `refused (${reply.status})`; }

  function runPage(runId) {
    const tbody = document.querySelector("#steps tbody");
    const message = document.getElementById("message");
    const rows = new Map();  // key -> tr
    const drawn = new Map();  // key -> what its row shows, as JSON
    let steps = new Map();  // key -> the step as known now: the last snapshot and every event after it
    let run = { status: "", inputs: {}, controls: [], breakpoints: [] };
    let base = -1;  // the sequence number of the snapshot
    const events = [];  // every event of the run, in order, from the API and then live
    const early = new Map();  // events that came before one missing in between
    let logged = 0;  // the last event in `events`
    let progress = { seq: -1, completed: 0, total: 0, eta_s: null };  // the API's, counted by the server
    let waitingDrawn;

    function say(text, bad) { message.textContent = text; message.className = bad ? "error" : ""; }

    // the state: a snapshot of the run with its steps, then the events after it ----------------

    // a change makes the controls listed for what was before stale: none are shown until the run is read again
    function applyEvent(event) {
      const d = event.data || {};
      const step = d.key !== undefined ? steps.get(d.key) : undefined;
      switch (event.type) {
        case "steps.added":
          for (const key of d.keys || []) {
            if (!steps.has(key)) steps.set(key, { key, step_id: stepIdOf(key), parent: d.parent ?? null, status: "pending", attempts: 0, artifacts: [], controls: [] });
          }
          break;
        case "step.updated":
          if (!step) break;
          if ("status" in d && d.status !== step.status) step.controls = [];
          for (const name of ["status", "inputs", "outputs", "error", "reason", "duration_ms"]) if (name in d) step[name] = d[name];
          if (d.attempt !== undefined) step.attempts = d.attempt;
          if (d.status === "running") Object.assign(step, { started_at: event.at, finished_at: null, error: d.error ?? null, reason: null });
          if (STEP_ENDED.has(d.status)) step.finished_at = event.at;
          if (d.artifacts && (d.artifacts.length || d.status === "failed")) step.artifacts = d.artifacts.map(artifactUrl);
          break;
        case "step.retried":
          if (step) step.attempts = d.attempt + 1;
          break;
        case "run.created": case "run.updated":
          if ("status" in d && d.status !== run.status) {
            run.controls = [];
            for (const each of steps.values()) each.controls = [];
          }
          for (const name of ["status", "outputs", "error", "waiting"]) if (name in d) run[name] = d[name];
          if (d.status === "running" && !run.started_at) run.started_at = event.at;
          if (RUN_ENDED.has(d.status)) run.finished_at = event.at;
          break;
        case "run.restored":
          if (!(run.restored || []).some((r) => r.at === d.at && r.before === d.before)) run.restored = [...(run.restored || []), d];
          break;
        case "control":
          if (d.control !== "breakpoint") run.controls = [];
          if (d.control !== "breakpoint" && steps.has(d.target)) steps.get(d.target).controls = [];
          if (d.control === "breakpoint") {
            const points = new Set(run.breakpoints || []);
            if (d.on) points.add(d.target); else points.delete(d.target);
            run.breakpoints = [...points];
          }
          break;
        default: break;
      }
    }

    function takeSnapshot(data) {
      const { steps: list, ...rest } = data;
      run = rest;
      base = data.seq;
      if (data.progress && data.seq >= progress.seq) progress = { ...data.progress, seq: data.seq, eta_s: progress.eta_s };
      steps = new Map(list.map((step) => [step.key, step]));
      let first = events.length;
      while (first > 0 && events[first - 1].seq > base) first -= 1;
      for (const event of events.slice(first)) applyEvent(event);
      draw();
    }

    let reading = null, readAgain = false, readTimer = null;
    async function refresh() {  // the run and its steps, read again: what the API says now, controls included
      if (reading) { readAgain = true; return reading; }
      reading = (async () => {
        do {
          readAgain = false;
          const reply = await api("GET", `/api/runs/${runId}`);
          if (reply.ok) takeSnapshot(reply.data);
          else if (reply.status !== 401 && reply.status !== 0) say(`cannot read the run: ${problem(reply)}`, true);
        } while (readAgain);
      })();
      try { await reading; } finally { reading = null; }
    }
    function refreshSoon() {  // many events in a burst make one read
      if (readTimer === null) readTimer = setTimeout(() => { readTimer = null; refresh(); }, 150);
    }

    function ingest(event) {
      if (event.run_id !== runId || event.seq <= logged) return;  // shown already
      if (event.seq > logged + 1) { early.set(event.seq, event); catchUp(); return; }
      accept(event);
      while (early.has(logged + 1)) { const next = early.get(logged + 1); early.delete(logged + 1); accept(next); }
      for (const seq of early.keys()) if (seq <= logged) early.delete(seq);
      document.body.dataset.seq = logged;
    }

    function accept(event) {
      events.push(event);
      logged = event.seq;
      document.getElementById("log").append(logLine(event));
      noteEvent(event);
      timelineSoon();
      const about = (event.data || {}).key;
      if (selected !== null && (about === selected || event.type === "run.updated")) panelSoon();
      if (event.seq <= base) return;  // the snapshot has it already
      const status = run.status;
      applyEvent(event);
      const d = event.data || {};
      if (run.status !== status) { draw(); } else {  // the run's status changes what each step allows
        showRun();
        for (const key of event.type === "steps.added" ? d.keys || [] : [d.key ?? d.target]) if (steps.has(key)) showStep(steps.get(key));
        showProgress();
      }
      if (["run.updated", "run.restored", "steps.added", "control"].includes(event.type) || (event.type === "step.updated" && d.status)) refreshSoon();
    }

    let catching = null;
    function catchUp() {  // the events after the last one shown, from the API, a page at a time
      if (catching) return catching;
      catching = (async () => {
        try {
          for (;;) {
            const reply = await api("GET", `/api/runs/${runId}/events?since=${logged}&limit=${EVENT_PAGE}`);
            if (!reply.ok) return;
            for (const event of reply.data.events) ingest(event);
            if (reply.data.events.length < EVENT_PAGE) return;
          }
        } finally { catching = null; }
      })();
      return catching;
    }

    // drawing --------------------------------------------------------------------------------

    function describe(event) {
      const d = event.data || {};
      const why = d.error ? (d.error.message || String(d.error)) : d.reason;
      switch (event.type) {
        case "run.created": return `run created${d.batch_id ? `, row ${d.row} of batch ${d.batch_id.slice(0, 8)}` : ""}: ${d.status || "queued"}`;
        case "run.updated":
          return `run ${d.status || "updated"}${d.waiting ? `: ${d.waiting.reason}` : why ? `: ${why}` : ""}`;
        case "steps.added": return `${d.parent ? `${d.parent}: ` : ""}steps added: ${(d.keys || []).join(", ")}`;
        case "step.updated":
          return `${d.key}: ${d.status}${d.status === "running" && d.attempt > 1 ? ` (attempt ${d.attempt})` : ""}` +
            `${d.duration_ms !== undefined ? ` in ${seconds(d.duration_ms)}` : ""}${why ? ` (${why})` : ""}`;
        case "step.retried":
          return `${d.key}: attempt ${d.attempt} failed (${d.error ? d.error.message : ""}); retrying in ${seconds(1000 * (d.wait_s || 0))}`;
        case "run.restored":
          return `the browser was rebuilt before ${d.before}, ${d.checkpoint_after ? `from the checkpoint after ${d.checkpoint_after}` : "with no checkpoint"}`;
        case "loop.sized": return `${d.key}: ${d.iterations} rounds of ${d.per_iteration} steps`;
        case "log": return `${d.key}: ${d.message}`;
        case "control":
          return `${d.who}: ${d.control}${d.target ? ` ${d.target}` : ""}${d.control === "breakpoint" ? (d.on ? " on" : " off") : ""}`;
        default: return event.type;
      }
    }

    function logLine(event) {
      const d = event.data || {};
      const kind = event.type === "log" ? d.level : event.type === "control" ? "control" : event.type === "step.retried" ? "retry"
        : d.status === "failed" ? "error" : "";
      return el("li", { "data-seq": event.seq, "data-type": event.type, class: kind || "" },
        el("time", { datetime: event.at, title: moment(event.at), text: event.at ? new Date(event.at).toLocaleTimeString() : "" }),
        " ", describe(event));
    }

    function isUnder(key, ancestor) {
      for (let step = steps.get(key); step && step.parent; step = steps.get(step.parent)) if (step.parent === ancestor) return true;
      return false;
    }

    function depthOf(step) {
      let depth = 0;
      for (let at = step; at && at.parent; at = steps.get(at.parent)) depth += 1;
      return depth;
    }

    function place(step) {
      const row = stepRow(step.key);
      rows.set(step.key, row);
      row.classList.toggle("selected", step.key === selected);
      const parent = step.parent ? rows.get(step.parent) : null;
      if (!parent) { tbody.append(row); return row; }
      let after = parent;  // after the parent's last descendant, so iterations stay grouped under their loop
      while (after.nextElementSibling && isUnder(after.nextElementSibling.dataset.key, step.parent)) after = after.nextElementSibling;
      after.after(row);
      return row;
    }

    function stepRow(key) {
      const actions = el("td", { class: "step-actions" });
      actions.addEventListener("click", (event) => {
        const button = event.target.closest("button[data-step-action]");
        if (button) stepControl(key, button.dataset.stepAction);
      });
      return el("tr", { "data-key": key },
        el("td", { class: "key" }, el("code", { text: key }), el("div", { class: "detail" }), el("div", { class: "shots" }),
          el("details", { class: "more" }, el("summary", { text: "details" }), el("dl", { class: "facts" }))),
        el("td", {}, el("span", { class: "badge" })), el("td", { class: "attempts" }), el("td", { class: "time" }), actions);
    }

    function facts(step) {
      const found = [];
      const add = (name, value) => { if (value !== null && value !== undefined && value !== "") found.push(el("dt", { text: name }), el("dd", {}, value)); };
      add("action", step.action);
      add("attempts", step.attempts ? String(step.attempts) : "");
      add("started", moment(step.started_at));
      add("finished", moment(step.finished_at));
      add("took", seconds(step.duration_ms));
      if (step.inputs && Object.keys(step.inputs).length) add("inputs", el("pre", { class: "inputs", text: json(step.inputs) }));
      if (step.outputs && Object.keys(step.outputs).length) add("outputs", el("pre", { class: "outputs", text: json(step.outputs) }));
      if (step.error) add("error", el("pre", { class: "error-detail", text: json(step.error) }));
      add("reason", step.reason);
      return found;
    }

    function showStep(step) {
      const breakpoint = (run.breakpoints || []).includes(step.key);
      const now = JSON.stringify([step, breakpoint]);
      if (drawn.get(step.key) === now) return;
      drawn.set(step.key, now);
      const row = rows.get(step.key) || place(step);
      row.dataset.status = step.status;
      row.classList.toggle("breakpoint", breakpoint);
      row.querySelector("td.key").style.paddingLeft = `${0.5 + 1.6 * depthOf(step)}em`;
      const badge = row.querySelector(".badge");
      badge.textContent = step.status; badge.className = `badge ${step.status}`;
      row.querySelector(".attempts").textContent = step.attempts ? String(step.attempts) : "";
      row.querySelector(".time").textContent = seconds(step.duration_ms);
      const why = step.error ? el("div", { class: "error", text: step.error.message || String(step.error) })
        : step.reason ? el("div", { class: "reason", text: step.reason }) : null;
      row.querySelector(".detail").replaceChildren(...(why ? [why] : []));
      row.querySelector(".shots").replaceChildren(...(step.artifacts || []).map((path) => {
        const name = decodeURIComponent(path.split("/").pop());
        return PICTURE.test(path)
          ? el("a", { href: path, target: "_blank", rel: "noopener" }, el("img", { class: "screenshot", src: path, alt: `${name}, taken by ${step.key}` }))
          : el("a", { class: "file", href: path, download: name, text: name });
      }));
      row.querySelector(".facts").replaceChildren(...facts(step));
      const controls = step.controls || [];
      row.querySelector(".step-actions").replaceChildren(...Object.keys(STEP_CONTROLS).filter((name) => controls.includes(name)).map((name) => {
        const spec = STEP_CONTROLS[name];
        const title = name === "breakpoint" && breakpoint ? "do not pause before this step" : spec.title;
        return el("button", { "data-step-action": name, title, "aria-pressed": name === "breakpoint" ? String(breakpoint) : null, text: spec.text });
      }));
    }

    function showRestored(restored) {
      const box = document.getElementById("restored");
      box.hidden = !(restored && restored.length);
      box.replaceChildren(...(restored || []).map((r) => el("p", {},
        `The browser was rebuilt ${r.checkpoint_after ? `from the checkpoint after step ${r.checkpoint_after}` : "from scratch (no checkpoint)"}` +
        ` before step ${r.before}${r.at ? `, at ${moment(r.at)}` : ""}. ` +
        (r.lost && r.lost.length ? `Lost: ${r.lost.join("; ")}.` : "Nothing was lost."))));
    }

    function showRun() {
      const badge = document.getElementById("run-status");
      badge.textContent = run.status || "…"; badge.className = `badge ${run.status || ""}`;
      document.body.dataset.status = run.status || "";
      const times = [run.created_at && `queued ${moment(run.created_at)}`, run.created_by && `by ${run.created_by}`,
        run.started_at && `started ${moment(run.started_at)}`, run.finished_at && `ended ${moment(run.finished_at)}`];
      document.getElementById("run-times").textContent = times.filter(Boolean).join(", ");
      const controls = run.controls || [];
      for (const button of document.querySelectorAll("[data-run-action]")) {
        const allowed = controls.includes(button.dataset.runAction);
        button.hidden = !allowed; button.disabled = !allowed;
      }
      showRestored(run.restored);
      // who may control the run may answer it: a paused run lists at least cancel for them
      const mayAnswer = (run.controls || []).length > 0;
      const waiting = JSON.stringify([run.waiting || null, mayAnswer]);
      if (waiting !== waitingDrawn) { waitingDrawn = waiting; showWaiting(run.waiting, mayAnswer); }
      document.getElementById("inputs").textContent = run.inputs && Object.keys(run.inputs).length ? json(run.inputs) : "none";
      const outputs = run.outputs && Object.keys(run.outputs).length ? json(run.outputs) : null;
      document.getElementById("outputs").textContent = outputs || (RUN_ENDED.has(run.status) ? "none" : "none yet");
      document.getElementById("run-error").textContent = run.error || "";
      showFacts();
    }

    function showProgress() {  // step instances ended, of those there are and those sized loops will still make
      const { completed, total } = progress;
      const percent = total ? Math.round(100 * completed / total) : 0;
      document.getElementById("progress-bar").style.width = `${total ? 100 * completed / total : 0}%`;
      document.getElementById("progress").setAttribute("aria-valuenow", String(percent));
      const eta = progress.eta_s;
      const left = eta !== null && eta !== undefined && !RUN_ENDED.has(run.status) ? `, about ${Math.ceil(eta)} s left` : "";
      document.getElementById("progress-text").textContent = `${completed} of ${total} steps${left}`;
    }

    function draw() {
      showRun();
      for (const step of steps.values()) showStep(step);
      showProgress();
      timelineSoon();
    }

    // the workbench: timeline, step panel, gallery, the run's facts ------------------------------------

    const tries = new Map();  // key -> its attempts as the events tell them: {number, status, start, end, error}
    const labels = new Map();  // "loop[2]" -> the label of the item that iteration ran for
    const pictures = new Map();  // every picture of the run (its URL) -> the step that took it
    let lastWorker = null;  // the worker that held the run last (a finished run's row no longer says)
    let lastAt = 0;  // the time of the latest event, in ms
    let selected = null;  // the key of the step shown in the panel
    let timelineFrame = null, panelTimer = null, picturesDrawn = -1, factsDrawn = null;

    function noteEvent(event) {  // what each event adds that the run's snapshot does not keep
      const d = event.data || {};
      const at = Date.parse(event.at);
      if (!Number.isNaN(at)) lastAt = Math.max(lastAt, at);
      const list = d.key !== undefined ? tries.get(d.key) : undefined;
      const open = list && list.length && list[list.length - 1].end === null ? list[list.length - 1] : null;
      if (event.type === "steps.added" && d.item !== undefined && d.parent) {
        const first = (d.keys || [])[0] || "";
        const close = first.indexOf("].", d.parent.length);
        if (first.startsWith(`${d.parent}[`) && close > 0) labels.set(first.slice(0, close + 1), d.item);
      } else if (event.type === "step.updated" && d.status === "running") {
        const attempts = list || [];
        attempts.push({ number: d.attempt || attempts.length + 1, status: "running", start: at, end: null, error: null });
        tries.set(d.key, attempts);
      } else if (event.type === "step.updated" && STEP_ENDED.has(d.status) && open) {
        Object.assign(open, { status: d.status, end: at, error: d.error || null });
      } else if (event.type === "step.retried" && open) {
        Object.assign(open, { status: "failed", end: at, error: d.error || null });
        list.push({ number: (d.attempt || open.number) + 1, status: "running", start: at + 1000 * (d.wait_s || 0), end: null, error: null });
      } else if ((event.type === "run.updated" || event.type === "run.created") && d.worker) {
        lastWorker = d.worker;
      }
      if (event.type === "step.updated") for (const path of d.artifacts || []) if (PICTURE.test(path)) pictures.set(artifactUrl(path), d.key);
    }

    function iterationOf(key, parent) {  // "loop[2]" for "loop[2].type" under the loop "loop"; null for others
      if (!parent || !key.startsWith(`${parent}[`)) return null;
      const close = key.indexOf("].", parent.length);
      return close > 0 ? key.slice(0, close + 1) : null;
    }

    function timelineRows() {  // the step instances in document order, iterations grouped under their loop
      const kids = new Map();
      for (const step of steps.values()) {
        const parent = step.parent ?? null;
        if (!kids.has(parent)) kids.set(parent, []);
        kids.get(parent).push(step);
      }
      const found = [];
      const visit = (parent, depth) => {
        const groups = new Map();  // iteration -> its steps
        const plain = [];
        for (const step of kids.get(parent) || []) {
          const iteration = iterationOf(step.key, parent);
          if (iteration === null) { plain.push(step); continue; }
          if (!groups.has(iteration)) groups.set(iteration, []);
          groups.get(iteration).push(step);
        }
        for (const step of plain) {
          found.push({ kind: "step", key: step.key, depth, step });
          visit(step.key, depth + 1);
        }
        const order = [...groups.keys()].sort((a, b) => Number(a.slice(a.lastIndexOf("[") + 1, -1)) - Number(b.slice(b.lastIndexOf("[") + 1, -1)));
        for (const iteration of order) {
          const members = groups.get(iteration);
          found.push({ kind: "iteration", key: iteration, depth, members });
          for (const step of members) {
            found.push({ kind: "step", key: step.key, depth: depth + 1, step });
            visit(step.key, depth + 2);
          }
        }
      };
      visit(null, 0);
      return found;
    }

    function spansOf(step) {  // its attempts; a step with none told (skipped, blocked) by its own times
      const attempts = tries.get(step.key);
      if (attempts && attempts.length) return attempts;
      const start = Date.parse(step.started_at);
      if (Number.isNaN(start)) return [];
      const end = step.finished_at ? Date.parse(step.finished_at) : null;
      return [{ number: step.attempts || 1, status: step.status, start, end, error: step.error || null }];
    }

    function attemptText(a, now) {
      const took = a.end !== null ? ` in ${seconds(a.end - a.start)}` : ` for ${seconds(now - a.start)}`;
      return `attempt ${a.number}: ${a.status}${took}${a.error ? ` (${a.error.message || ""})` : ""}`;
    }

    function drawTimeline() {
      timelineFrame = null;
      const box = document.getElementById("timeline");
      const rowsFound = timelineRows();
      const spans = new Map(rowsFound.filter((r) => r.kind === "step").map((r) => [r.key, spansOf(r.step)]));
      const starts = [...spans.values()].flat().map((a) => a.start);
      const runStart = Date.parse(run.started_at);
      if (!Number.isNaN(runStart)) starts.push(runStart);
      const origin = starts.length ? starts.reduce((a, b) => Math.min(a, b)) : 0;
      const now = Math.max(Date.now(), lastAt);
      const ended = RUN_ENDED.has(run.status) && run.finished_at ? Date.parse(run.finished_at) : now;
      const ends = [...spans.values()].flat().map((a) => a.end ?? now);
      const span = ends.reduce((a, b) => Math.max(a, b), Math.max(ended, origin + 1)) - origin;
      const position = (node, start, end) => {
        node.style.left = `${(100 * (start - origin)) / span}%`;
        node.style.width = `${Math.max((100 * ((end ?? now) - start)) / span, 0.3)}%`;
        return node;
      };
      box.replaceChildren(...rowsFound.map((r) => {
        const track = el("span", { class: "tl-track" });
        let status, text;
        if (r.kind === "iteration") {
          const all = r.members.flatMap((m) => spans.get(m.key) || []);
          const states = new Set(r.members.map((m) => m.status));
          status = states.has("failed") ? "failed" : states.has("running") ? "running"
            : [...states].every((s) => s === "completed" || s === "skipped") ? "completed" : "pending";
          const label = labels.get(r.key);
          text = el("span", {}, el("code", { text: r.key.slice(r.key.lastIndexOf("[")) }), " ",
            el("span", { class: "tl-item", text: label ?? "" }));
          if (all.length) {
            const open = all.some((a) => a.end === null);
            track.append(position(el("span", { class: "tl-bar iteration" }), all.reduce((m, a) => Math.min(m, a.start), Infinity),
              open ? null : all.reduce((m, a) => Math.max(m, a.end), -Infinity)));
          }
        } else {
          status = r.step.status;
          text = el("code", { text: r.key.slice(r.step.parent ? (iterationOf(r.key, r.step.parent) || r.step.parent).length + 1 : 0) });
          for (const a of spans.get(r.key)) {
            track.append(position(el("span", { class: `tl-seg ${a.status}`, "data-attempt": a.number, "data-status": a.status,
              title: attemptText(a, now) }), a.start, a.end));
          }
        }
        const label = el("span", { class: "tl-label", title: r.key }, text);
        label.style.paddingLeft = `${0.3 + 1.2 * r.depth}em`;
        return el("div", { class: `tl-row ${r.kind}${r.key === selected ? " selected" : ""}`, "data-key": r.key,
          "data-kind": r.kind, "data-status": status, tabindex: r.kind === "step" ? "0" : null,
          role: r.kind === "step" ? "button" : null }, label, track);
      }));
      drawGallery();
      showFacts();  // the worker, from the events read after the snapshot
    }

    function timelineSoon() {  // at most one drawing per 100 ms, however many events come (a long loop)
      if (timelineFrame === null) timelineFrame = setTimeout(() => requestAnimationFrame(drawTimeline), 100);
    }

    function drawGallery() {
      for (const step of steps.values()) for (const path of step.artifacts || []) if (PICTURE.test(path) && !pictures.has(path)) pictures.set(path, step.key);
      if (pictures.size === picturesDrawn) return;
      picturesDrawn = pictures.size;
      document.getElementById("no-pictures").hidden = pictures.size > 0;
      document.getElementById("gallery").replaceChildren(...[...pictures].map(([url, key]) => {
        const name = decodeURIComponent(url.split("/").pop());
        return el("figure", { "data-key": key },
          el("a", { href: url, target: "_blank", rel: "noopener" }, el("img", { src: url, alt: `${name}, taken by ${key}`, loading: "lazy" })),
          el("figcaption", {}, el("button", { type: "button", class: "link", "data-select": key, text: key }), ` ${name}`));
      }));
    }

    // the step panel: what the API says of one step, read again as its events come

    function select(key) {
      selected = key;
      history.replaceState(null, "", key ? `#step=${encodeURIComponent(key)}` : location.pathname + location.search);
      for (const row of document.querySelectorAll("#timeline .tl-row.selected, #steps tr.selected")) row.classList.remove("selected");
      if (!key) { document.getElementById("step-panel").hidden = true; return; }
      for (const row of document.querySelectorAll(`#timeline .tl-row, #steps tr[data-key]`)) if (row.dataset.key === key) row.classList.add("selected");
      loadPanel();
    }

    function selectFromAddress() {  // #step=<key>: a link to one step of the run
      const wanted = /^#step=(.+)$/.exec(location.hash);
      if (!wanted) return;
      let key = wanted[1];
      try { key = decodeURIComponent(key); } catch (_) { /* not percent-encoded: the key as written */ }
      select(key);
    }

    function panelSoon() {
      if (panelTimer === null) panelTimer = setTimeout(() => { panelTimer = null; loadPanel(); }, 200);
    }

    async function loadPanel() {
      const key = selected;
      if (!key) return;
      const reply = await api("GET", `/api/runs/${runId}/steps/${encodeURIComponent(key)}`);
      if (key !== selected) return;
      const panel = document.getElementById("step-panel");
      panel.hidden = false;
      document.getElementById("panel-key").textContent = key;
      if (!reply.ok) {
        for (const id of ["panel-fields", "panel-inputs", "panel-outputs", "panel-attempts", "panel-log", "panel-shots"]) document.getElementById(id).replaceChildren();
        document.getElementById("panel-error").textContent = problem(reply);
        return;
      }
      showPanel(reply.data);
      panel.dataset.key = key;
      panel.dataset.seq = String(logged);
    }

    function showPanel(detail) {
      const step = detail.step;
      const shown = (value) => value && (typeof value !== "object" || Object.keys(value).length) ? json(value) : "none";
      const badge = document.getElementById("panel-status");
      badge.textContent = step.status; badge.className = `badge ${step.status}`;
      document.getElementById("panel-error").textContent = step.error ? step.error.message || json(step.error) : step.reason || "";
      document.getElementById("panel-action").textContent = step.action;
      const took = step.duration_ms ?? null;
      document.getElementById("panel-duration").textContent = took !== null ? `took ${seconds(took)}` : step.started_at ? "running" : "not started";
      const typical = detail.typical_ms;
      let against = "";
      if (typical !== null && typical !== undefined) {
        const ratio = took !== null && typical > 0 ? took / typical : null;
        against = `typical ${seconds(typical)}` + (ratio === null ? "" : ratio >= 1.5 ? ` (${ratio.toFixed(1)}× slower)` : ratio <= 0.67 ? ` (${(1 / ratio).toFixed(1)}× faster)` : " (as usual)");
      }
      document.getElementById("panel-typical").textContent = against || "no typical duration yet";
      document.getElementById("panel-fields").textContent = shown(detail.fields);
      document.getElementById("panel-inputs").textContent = shown(step.inputs);
      document.getElementById("panel-outputs").textContent = shown(step.outputs);
      const attempts = detail.attempts || [];
      document.getElementById("panel-attempts").replaceChildren(...attempts.map((a) => {
        const start = Date.parse(a.started_at), end = a.ended_at ? Date.parse(a.ended_at) : null;
        return el("li", { "data-attempt": a.number, "data-status": a.status, class: a.status },
          attemptText({ ...a, start, end }, Math.max(Date.now(), lastAt)),
          a.error ? el("pre", { class: "error-detail", text: json(a.error) }) : null);
      }));
      document.getElementById("panel-log").replaceChildren(...(detail.log || []).map((line) => el("li", { class: line.level || "" },
        el("time", { datetime: line.at, text: line.at ? new Date(line.at).toLocaleTimeString() : "" }), " ", line.message || "")));
      document.getElementById("panel-shots").replaceChildren(...(detail.screenshots || []).map((url) => {
        const name = decodeURIComponent(url.split("/").pop());
        return el("a", { href: url, target: "_blank", rel: "noopener" }, el("img", { class: "screenshot", src: url, alt: `${name}, taken by ${step.key}` }));
      }));
    }

    document.getElementById("timeline").addEventListener("click", (event) => {
      const row = event.target.closest(".tl-row[data-kind=step]");
      if (row) select(row.dataset.key);
    });
    document.getElementById("timeline").addEventListener("keydown", (event) => {
      const row = event.target.closest(".tl-row[data-kind=step]");
      if (row && (event.key === "Enter" || event.key === " ")) { event.preventDefault(); select(row.dataset.key); }
    });
    tbody.addEventListener("click", (event) => {
      if (event.target.closest("button, a, summary, details, input")) return;
      const row = event.target.closest("tr[data-key]");
      if (row) select(row.dataset.key);
    });
    document.getElementById("gallery").addEventListener("click", (event) => {
      const key = event.target.dataset && event.target.dataset.select;
      if (key) select(key);
    });
    document.getElementById("panel-close").addEventListener("click", () => select(null));

    // the run's facts: worker, times, cost, trace

    function costValue(name, value) {
      if (typeof value !== "number") return typeof value === "string" ? value : json(value);
      if (/_ms$/.test(name)) return seconds(value);
      if (/bytes/.test(name)) {
        const units = ["B", "KB", "MB", "GB"];
        let n = value, unit = 0;
        while (n >= 1024 && unit < units.length - 1) { n /= 1024; unit += 1; }
        return `${unit ? n.toFixed(1) : n} ${units[unit]}`;
      }
      return String(value);
    }

    function showFacts() {
      const facts = [];
      const add = (name, value) => { if (value) facts.push(el("dt", { text: name }), el("dd", { "data-fact": name }, value)); };
      add("worker", run.worker || lastWorker || "");
      add("queued", moment(run.created_at));
      add("started", moment(run.started_at));
      add("ended", moment(run.finished_at));
      if (run.started_at && run.finished_at) add("took", seconds(Date.parse(run.finished_at) - Date.parse(run.started_at)));
      add("by", run.created_by || "");
      const now = JSON.stringify([facts.map((f) => f.textContent), run.cost || null, run.trace || null]);
      if (now === factsDrawn) return;
      factsDrawn = now;
      document.getElementById("run-facts").replaceChildren(...facts);
      const cost = run.cost && typeof run.cost === "object" ? Object.entries(run.cost) : [];
      document.getElementById("no-cost").hidden = cost.length > 0;
      document.querySelector("#run-cost tbody").replaceChildren(...cost.map(([name, value]) =>
        el("tr", { "data-cost": name }, el("th", { text: name.replace(/_/g, " ") }), el("td", { text: costValue(name, value) }))));
      const trace = run.trace;
      const box = document.getElementById("run-trace");
      if (!trace) { box.replaceChildren(); return; }
      const said = `Trace: ${trace.status || "?"}${trace.bytes ? `, ${costValue("bytes", trace.bytes)}` : ""}`;
      box.replaceChildren(...[el("p", { "data-trace": trace.status || "" }, said,
        trace.download ? " · " : null, trace.download ? el("a", { id: "trace-download", href: trace.download, download: "", text: "Download" }) : null,
        trace.viewer && window.isSecureContext ? " · " : null,
        trace.viewer && window.isSecureContext ? el("a", { id: "trace-viewer", href: trace.viewer, target: "_blank", rel: "noopener", text: "Open in trace viewer" }) : null),
      trace.reason ? el("p", { class: "reason", id: "trace-reason", text: trace.reason }) : null].filter(Boolean));
    }

    // a person's answer -----------------------------------------------------------------------

    async function answer(form, waiting, values) {
      const error = form.querySelector(".form-error");
      const buttons = form.querySelectorAll("button");
      error.textContent = "";
      for (const button of buttons) button.disabled = true;
      const reply = await api("POST", `/api/runs/${runId}/steps/${encodeURIComponent(waiting.key)}/submit`, { values });
      for (const button of buttons) button.disabled = false;
      if (!reply.ok) { error.textContent = problem(reply); return; }
      form.dataset.sent = "true";
      await refresh();
    }

    function approvalForm(waiting) {
      const reason = el("input", { name: "comment", type: "text", autocomplete: "off", maxlength: "2000" });
      const form = el("form", { id: "human-form", "data-kind": "approval" });
      if (waiting.form && waiting.form.message) form.append(el("p", { text: waiting.form.message }));
      form.append(el("label", {}, "Reason (when you reject; optional) ", reason),
        el("p", { class: "answers" },
          el("button", { type: "button", class: "approve", "data-answer": "approve", text: "Approve" }), " ",
          el("button", { type: "button", class: "reject", "data-answer": "reject", text: "Reject" })),
        el("p", { class: "form-error error", role: "alert" }));
      form.addEventListener("submit", (event) => event.preventDefault());  // Enter in the reason decides nothing
      form.addEventListener("click", (event) => {
        const choice = event.target.dataset && event.target.dataset.answer;
        if (!choice) return;
        const values = { approved: choice === "approve" };
        if (reason.value.trim()) values.comment = reason.value.trim();
        answer(form, waiting, values);
      });
      return form;
    }

    function inputForm(waiting) {
      const form = el("form", { id: "human-form", "data-kind": "input" });
      if (waiting.form.message) form.append(el("p", { text: waiting.form.message }));
      for (const [name, spec] of Object.entries(waiting.form.fields || {})) {
        const type = spec.type === "boolean" ? "checkbox" : spec.secret ? "password" : spec.type === "string" ? "text" : "number";
        form.append(el("label", {}, `${spec.label || name} `, el("input", { name, type, "data-type": spec.type, autocomplete: "off" })));
      }
      form.append(el("button", { type: "submit", text: "Submit" }), el("p", { class: "form-error error", role: "alert" }));
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        const values = {};
        for (const field of form.querySelectorAll("[data-type]")) { const v = readInput(field); if (v !== undefined) values[field.name] = v; }
        answer(form, waiting, values);
      });
      return form;
    }

    function showWaiting(waiting, mayAnswer) {
      const box = document.getElementById("waiting");
      box.replaceChildren();
      if (!waiting) return;
      box.append(el("p", { class: `waiting ${waiting.kind}`, text: waiting.reason }));
      const form = waiting.kind === "approval" ? approvalForm(waiting) : waiting.form ? inputForm(waiting) : null;
      if (!form) return;
      if (!mayAnswer) {
        for (const field of form.querySelectorAll("input, button")) field.disabled = true;
        form.append(el("p", { class: "muted", text: "Only the run's creator or an admin may answer." }));
      }
      box.append(form);
    }

    // controls -------------------------------------------------------------------------------

    async function control(path, body) {
      const reply = await api("POST", path, body);
      say(reply.ok ? "" : problem(reply), !reply.ok);
      await refresh();
    }

    function stepControl(key, action) {
      const path = `/api/runs/${runId}/steps/${encodeURIComponent(key)}/${action}`;
      if (action === "breakpoint") control(path, { on: !(run.breakpoints || []).includes(key) });
      else control(path);
    }

    document.querySelector(".toolbar").addEventListener("click", (event) => {
      const action = event.target.dataset.runAction;
      if (action) control(`/api/runs/${runId}/${action}`);
    });

    // the story so far, then live ----------------------------------------------------------------

    const ready = (async () => {
      await refresh();
      await catchUp();
      selectFromAddress();  // the step shown before a reload, shown again
      document.body.dataset.ready = "true";
    })();
    window.addEventListener("hashchange", selectFromAddress);
    setInterval(() => { if (!RUN_ENDED.has(run.status)) timelineSoon(); }, 1000);  // running bars grow
    let connected = false;
    const socket = connect(async () => {
      if (connected) await refresh(); else await ready;  // after a lost connection: what changed meanwhile
      connected = true;
      await catchUp();
      // once the server has us among the run's watchers (its live pictures are taken for them), the page says so
      socket.emit("subscribe", { run_id: runId, since: logged }, () => { document.body.dataset.watching = "true"; });
    });
    for (const name of ["run.updated", "step.updated", "log"]) socket.on(name, ingest);
    socket.on("progress", (p) => {
      if (p.run_id !== runId || p.seq < progress.seq) return;  // a snapshot read after it counts already
      progress = p;
      showProgress();
    });
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

  // schedules ----------------------------------------------------------------------------

  function schedulesPage() {
    const form = document.getElementById("schedule-form");
    const result = document.getElementById("schedule-result");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const f = form.elements;
      let inputs;
      try { inputs = JSON.parse(f.inputs.value || "{}"); } catch (_) {
        result.replaceChildren(problemsList({ error: "inputs: not JSON" }));
        return;
      }
      const body = { sop_id: f.sop_id.value, timezone: f.timezone.value, inputs, overlap: f.overlap.value, catch_up: f.catch_up.value };
      if (f.cron.value.trim()) body.cron = f.cron.value.trim();
      if (f.interval_seconds.value) body.interval_seconds = Number(f.interval_seconds.value);
      if (f.version.value) body.version = Number(f.version.value);
      const reply = await api("POST", "/api/schedules", body);
      if (reply.ok) location.reload();
      else result.replaceChildren(problemsList(reply.data));
    });
    for (const row of document.querySelectorAll("tr.schedule")) {
      const path = `/api/schedules/${row.dataset.id}`;
      const act = async (method, body) => {
        const reply = await api(method, path, body);
        if (reply.ok) location.reload();
        else result.replaceChildren(problemsList(reply.data));
      };
      const toggle = row.querySelector("button.toggle");
      if (toggle) toggle.addEventListener("click", () => act("PATCH", { enabled: toggle.dataset.enable === "true" }));
      const remove = row.querySelector("button.delete");
      if (remove) remove.addEventListener("click", () => act("DELETE"));
    }
  }

  // circuit breakers: an operator closes one by hand
  function breakersPage() {
    document.getElementById("breakers").addEventListener("click", async (event) => {
      const host = event.target.dataset.reset;
      if (!host) return;
      const reply = await api("POST", `/api/breakers/${encodeURIComponent(host)}/reset`);
      const message = document.getElementById("message");
      message.textContent = reply.ok ? "" : reply.data.error; message.className = reply.ok ? "" : "error";
      if (reply.ok) location.reload();
    });
  }

  return { api, el, uploadForm, runForm, runsPage, runPage, batchForm, batchPage, loginPage, schedulesPage, breakersPage };
})();
