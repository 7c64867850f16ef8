/* Webhooks on the page: the /webhooks management page, and a run's Notifications (its deliveries). */
"use strict";

const SOPHooks = (() => {
  const { api, el } = SOP;

  function moment(iso) { return iso ? new Date(iso).toLocaleString() : ""; }

  function attemptText(a) {
    return `#${a.attempt} ${a.code !== null ? a.code : (a.error || "error")} at ${moment(a.at)} (${Math.round(a.ms)} ms)`;
  }

  function notifications(runId) {
    const tbody = document.querySelector("#deliveries tbody");
    const none = document.getElementById("no-deliveries");
    async function load() {
      const reply = await api("GET", `/api/runs/${runId}/deliveries`);
      if (!reply.ok) return;
      const rows = reply.data.deliveries;
      none.hidden = rows.length > 0;
      tbody.replaceChildren(...rows.map((d) => el("tr", { "data-delivery": d.id, "data-status": d.status },
        el("td", { text: d.event }), el("td", {}, el("code", { text: d.webhook_id })),
        el("td", {}, el("span", { class: `badge ${d.status === "delivered" ? "completed" : d.status}`, text: d.status })),
        el("td", { class: "attempts" }, el("ol", {}, ...d.log.map((a) => el("li", { text: attemptText(a) })))))));
      document.getElementById("notifications").dataset.loaded = String(Date.now());
    }
    load();
    setInterval(() => { if (!document.hidden) load(); }, 3000);
  }

  function webhooksPage() {
    const tbody = document.querySelector("#webhooks tbody");
    const result = document.getElementById("webhook-result");
    const form = document.getElementById("webhook-form");

    async function load() {
      const reply = await api("GET", "/api/webhooks");
      if (!reply.ok) { result.textContent = reply.data.error; return; }
      const hooks = reply.data.webhooks;
      document.getElementById("no-webhooks").hidden = hooks.length > 0;
      tbody.replaceChildren(...hooks.map((h) => el("tr", { "data-webhook": h.id, class: h.failures ? "failing" : null },
        el("td", {}, el("code", { text: h.url })), el("td", { text: h.scope }), el("td", { text: h.events.join(", ") }),
        el("td", { text: h.last_status ? `${h.last_status} at ${moment(h.last_attempt_at)}` : "never called" }),
        el("td", {}, el("span", { class: h.failures ? "badge failed" : "badge", text: String(h.failures) })),
        el("td", {},
          el("button", { type: "button", text: "Test", onclick: () => ping(h.id) }), " ",
          el("button", { type: "button", text: "Remove", onclick: () => remove(h.id) })))));
      document.body.dataset.loaded = String(Date.now());
    }

    async function ping(id) {
      const reply = await api("POST", `/api/webhooks/${id}/test`);
      result.textContent = reply.ok ? `A ping is on its way (delivery ${reply.data.delivery}).` : reply.data.error;
    }

    async function remove(id) {
      const reply = await api("DELETE", `/api/webhooks/${id}`);
      result.textContent = reply.ok ? "" : reply.data.error;
      load();
    }

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const events = [...form.querySelectorAll("input[name=events]:checked")].map((box) => box.value);
      const body = { url: form.elements.url.value, scope: form.elements.scope.value || "server", events };
      const reply = await api("POST", "/api/webhooks", body);
      if (reply.ok) {
        result.replaceChildren(el("div", { class: "secret-once" },
          el("p", { text: "Its signing secret, shown this once: keep it where the receiver can read it." }),
          el("code", { id: "new-secret", text: reply.data.secret })));
        form.reset();
      } else {
        const problems = (reply.data && reply.data.problems) || [];
        result.replaceChildren(el("p", { class: "error", text: reply.data.error }),
          ...problems.map((p) => el("p", { class: "error", text: `${p.where}: ${p.message}` })));
      }
      load();
    });
    load();
    setInterval(() => { if (!document.hidden) load(); }, 5000);
  }

  return { notifications, webhooksPage };
})();
