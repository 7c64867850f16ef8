/* The dead-letter page: failed runs grouped by their error, bulk actions on them, the server's audit log.
   Every text from the server (error messages come from hostile pages) is set as text, never as HTML. */
"use strict";

const DeadLetters = (() => {
  const { el } = SOP;  // app.js, loaded first by base.html

  function filters() {
    const form = document.getElementById("dead-filters");
    const values = {};
    for (const name of ["sop_id", "error_kind", "batch_id", "since", "until"]) {
      const value = form.elements[name].value.trim();
      if (value) values[name] = value;
    }
    return values;
  }

  function selected() {
    return [...document.querySelectorAll("#groups input.run:checked")].map((box) => box.value);
  }

  function counted() {
    document.getElementById("selected-count").textContent = `${selected().length} selected`;
  }

  function group(g) {
    const all = el("input", { type: "checkbox", class: "select-group", "aria-label": "select group" });
    all.addEventListener("change", () => {
      for (const box of section.querySelectorAll("input.run")) box.checked = all.checked;
      counted();
    });
    const runs = g.runs.map((id) => el("li", {},
      el("label", {}, el("input", { type: "checkbox", class: "run", value: id, onchange: counted }), " "),
      el("a", { href: `/runs/${encodeURIComponent(id)}`, text: id.slice(0, 8) })));
    const more = g.count > g.runs.length ? el("li", { text: `… and ${g.count - g.runs.length} more (the group's buttons act on them too)` }) : null;
    const buttons = ["retry", "rerun", "delete"].map((action) =>
      el("button", { type: "button", "data-group-action": action, text: `${action[0].toUpperCase()}${action.slice(1)} group` }));
    const section = el("section", { class: "group", "data-group": g.key },
      el("h3", {}, el("label", {}, all, " "), el("span", { class: "count", text: `${g.count} × ` }),
        el("span", { class: "message error", text: g.message })),
      el("p", { class: "reason", text: `kinds: ${g.kinds.join(", ")} · SOPs: ${g.sops.join(", ")} · first ${g.first_seen} · last ${g.last_seen}` }),
      el("details", {}, el("summary", { text: "latest message" }), el("pre", { text: g.example })),
      el("div", { class: "toolbar" }, ...buttons),
      el("ul", { class: "runs" }, ...runs, more));
    return section;
  }

  let asked = 0;  // the latest request for groups: an older answer that arrives after it is dropped

  async function loadGroups() {
    const query = new URLSearchParams(filters()).toString();
    const mine = ++asked;
    const reply = await SOP.api("GET", `/api/dead-letters${query ? "?" + query : ""}`);
    if (mine !== asked) return;  // the filters changed meanwhile: a newer answer is coming
    const target = document.getElementById("groups");
    const summary = document.getElementById("dead-summary");
    if (!reply.ok) { summary.textContent = (reply.data && reply.data.error) || "refused"; summary.className = "error"; target.replaceChildren(); return; }
    const d = reply.data;
    summary.className = "";
    summary.textContent = d.groups.length
      ? `${d.scanned} failed runs in ${d.groups.length} groups${d.truncated ? " (only the latest were read: narrow the filters)" : ""}`
      : "No failed run fits.";
    target.replaceChildren(...d.groups.map(group));
    counted();
  }

  async function loadAudit() {
    const reply = await SOP.api("GET", "/api/audit?limit=20");
    const tbody = document.querySelector("#audit tbody");
    if (!reply.ok) {
      tbody.replaceChildren(el("tr", {}, el("td", { colspan: 7, text: reply.status === 403 ? "The audit log is for admins." : (reply.data && reply.data.error) || "unavailable" })));
      return;
    }
    tbody.replaceChildren(...reply.data.audit.map((line) => el("tr", { "data-action": line.action, "data-outcome": line.outcome },
      el("td", { text: line.at }), el("td", { text: line.who }), el("td", { text: line.action + (line.target ? ` ${line.target}` : "") }),
      el("td", { text: line.run_id ? line.run_id.slice(0, 8) : "" }), el("td", { text: line.sop_id || "" }),
      el("td", { text: line.outcome }), el("td", { class: "reason", text: line.detail ? JSON.stringify(line.detail) : "" }))));
  }

  async function load() {
    await Promise.all([loadGroups(), loadAudit()]);
    document.body.dataset.loaded = String(Date.now());
  }

  async function act(action, target) {
    if (action === "delete" && !window.confirm("Delete these runs with their steps, events and files? Their audit lines stay.")) return;
    const reply = await SOP.api("POST", "/api/runs/bulk", { action, ...target });
    const result = document.getElementById("bulk-result");
    if (!reply.ok) {
      result.replaceChildren(el("p", { class: "error", text: (reply.data && reply.data.error) || "refused" }));
    } else {
      const d = reply.data;
      const refused = d.results.filter((r) => r.outcome === "refused")
        .map((r) => el("li", { text: `${r.run_id.slice(0, 8)}: ${r.reason}` }));
      result.replaceChildren(el("p", { class: d.refused ? "error" : "ok", text: `${action}: ${d.done} done, ${d.refused} refused${d.left ? `, ${d.left} left for another request` : ""}` }),
        el("ul", { class: "problems" }, ...refused));
    }
    await load();
  }

  function page() {
    document.getElementById("dead-filters").addEventListener("submit", (event) => { event.preventDefault(); load(); });
    document.querySelector("[data-bulk]").parentElement.addEventListener("click", (event) => {
      const action = event.target.dataset.bulk;
      if (!action) return;
      const runs = selected();
      if (!runs.length) { document.getElementById("bulk-result").replaceChildren(el("p", { class: "error", text: "select runs first" })); return; }
      act(action, { runs });
    });
    document.getElementById("groups").addEventListener("click", (event) => {
      const action = event.target.dataset.groupAction;
      if (!action) return;
      act(action, { group: event.target.closest("section").dataset.group, filters: filters() });
    });
    load();
  }

  return { page };
})();
