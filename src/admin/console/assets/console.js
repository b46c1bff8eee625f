// The tolk console's only script (embedded in the binary; no library, no build step).
// It does three things, the way htmx would, in the few lines this console needs:
//   1. live parts: an element with data-live="URL" is re-fetched and swapped when a
//      server-sent event arrives on its data-events="URL", or every data-poll ms;
//   2. actions: a button with data-action="URL" POSTs there (with the session's CSRF
//      token), then refreshes the live part it is in;
//   3. API forms: a form with data-api="URL" POSTs its fields as JSON and shows the answer.
"use strict";
(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";
  const status = (text, bad) => {
    const el = document.getElementById("status");
    if (!el) return;
    el.textContent = text;
    el.className = bad ? "status bad" : "status";
  };

  async function refresh(part) {
    const res = await fetch(part.dataset.live, { credentials: "same-origin", headers: { Accept: "text/html" } });
    if (res.status === 401) { window.location.reload(); return; }
    if (res.ok) part.innerHTML = await res.text();
  }

  // Several events in a burst (three members joining) refresh once.
  function debounced(part) {
    let timer = null;
    return () => {
      if (timer) return;
      timer = setTimeout(() => { timer = null; refresh(part).catch(() => {}); }, 150);
    };
  }

  for (const part of document.querySelectorAll("[data-live]")) {
    const again = debounced(part);
    if (part.dataset.events) {
      const source = new EventSource(part.dataset.events);
      // The console's stream sends every room event unnamed, so one handler sees them all.
      source.onmessage = again;
      source.onerror = () => status("live updates interrupted; retrying", true);
      source.onopen = () => status("");
      // A slow safety net: a missed event is repaired within 15 s.
      setInterval(again, 15000);
    }
    if (part.dataset.poll) setInterval(again, Number(part.dataset.poll));
  }

  async function post(url, body) {
    const headers = { "X-CSRF-Token": csrf };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const res = await fetch(url, { method: "POST", credentials: "same-origin", headers,
      body: body === undefined ? undefined : JSON.stringify(body) });
    let answer = null;
    try { answer = await res.json(); } catch (_) { answer = null; }
    return { ok: res.ok, status: res.status, answer };
  }

  document.addEventListener("click", async (e) => {
    const button = e.target.closest("button[data-action]");
    if (!button) return;
    e.preventDefault();
    if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
    button.disabled = true;
    const r = await post(button.dataset.action).catch(() => ({ ok: false, status: 0, answer: null }));
    button.disabled = false;
    status(r.ok ? "done" : (r.answer?.error || "failed (" + r.status + ")"), !r.ok);
    const part = button.closest("[data-live]");
    if (part) refresh(part).catch(() => {});
  });

  document.addEventListener("submit", async (e) => {
    const form = e.target.closest("form[data-api]");
    if (!form) return;
    e.preventDefault();
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) return;
    const body = Object.fromEntries(new FormData(form).entries());
    const r = await post(form.dataset.api, body).catch(() => ({ ok: false, status: 0, answer: null }));
    const out = document.getElementById("privacy-result");
    const text = r.ok ? "done: " + JSON.stringify(r.answer) : (r.answer?.error || "failed (" + r.status + ")");
    if (out) out.textContent = text;
    status(r.ok ? "done" : text, !r.ok);
    if (r.ok) form.reset();
  });
})();
