// Client web chat: one WebSocket, a transcript kept in this browser, resend of unacked messages;
// a notice about one of the visitor's messages (held for review, released, rejected, blocked) marks that message.
"use strict";
(function () {
  const prefix = document.body.dataset.prefix;
  const { $, showError, appendBody, setStatus } = window.RelayWeb;
  const randomId = () => window.RelayWeb.randomId(16);
  let visitor = localStorage.getItem("relay.visitor");
  if (!visitor) { visitor = "v" + randomId(); localStorage.setItem("relay.visitor", visitor); }
  const storeKey = "relay.transcript." + visitor;
  let entries = [];
  try { entries = JSON.parse(localStorage.getItem(storeKey) || "[]"); } catch (e) { entries = []; }
  let pendingUploads = [];
  let ws = null;
  let backoff = 500;

  const save = () => localStorage.setItem(storeKey, JSON.stringify(entries.slice(-500)));
  const find = (id) => entries.find((e) => e.id === id);
  const OUTCOME = { held: "held for review, not yet delivered", released: "sent: cleared by the review",
    rejected: "not delivered: rejected by compliance",
    blocked: "not delivered: blocked by policy", undeliverable: "not delivered" };

  function render() {
    const log = $("log");
    log.replaceChildren();
    for (const e of entries) {
      const div = document.createElement("div");
      div.className = "msg " + e.who + (e.state === "failed" ? " failed" : "") + (e.deleted ? " deleted" : "") +
        (e.outcome ? " " + e.outcome : "");
      div.dataset.id = e.id;
      if (e.who === "them" && e.from) {
        const meta = document.createElement("span");
        meta.className = "meta";
        meta.textContent = e.from;
        div.append(meta);
      }
      appendBody(div, e);
      if (e.who === "me") {
        const state = document.createElement("span");
        state.className = "state";
        state.textContent = e.outcome ? OUTCOME[e.outcome] || e.outcome : e.state === "sent" ? "sent" :
          e.state === "failed" ? "not sent: " + (e.error || "") + (e.retry ? " (click to retry)" : "") : "sending…";
        if (e.state === "failed" && e.retry) state.addEventListener("click", () => { e.state = "sending"; save(); render(); transmit(e); });
        div.append(state);
      }
      log.append(div);
    }
    log.scrollTop = log.scrollHeight;
  }

  function transmit(e) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    const frame = { type: "message", id: e.id, text: e.text };
    if (e.uploads && e.uploads.length) frame.attachments = e.uploads;
    ws.send(JSON.stringify(frame));
  }

  function onFrame(f) {
    if (f.type === "ack") {
      const e = find(f.id);
      if (e) { e.state = "sent"; e.error = ""; }
    } else if (f.type === "notice" && f.answers && find(f.answers) && find(f.answers).who === "me") {
      const e = find(f.answers);  // the relay's word on this message: held, rejected, blocked…
      e.state = "sent";
      e.outcome = f.about || "notice";
      e.note = f.text || "";
    } else if (f.type === "error") {
      const e = f.id ? find(f.id) : null;
      if (e) { e.state = "failed"; e.error = f.error; e.retry = f.retry === true; } else showError(f.error);
    } else if (f.type === "message" || f.type === "notice") {
      if (find(f.id)) return;
      entries.push({ id: f.id, who: f.type === "notice" ? "notice" : "them", text: f.text || "",
        from: f.from || "", files: f.attachments || [] });
    } else if (f.type === "edit") {
      const e = find(f.id);
      if (e) { e.text = f.text; e.edited = true; }
    } else if (f.type === "delete") {
      const e = find(f.id);
      if (e) e.deleted = true;
    } else return;
    save();
    render();
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const name = localStorage.getItem("relay.name") || "";
    ws = new WebSocket(scheme + location.host + prefix + "/ws?visitor=" + encodeURIComponent(visitor) +
      "&name=" + encodeURIComponent(name));
    ws.onopen = () => {
      backoff = 500;
      setStatus(true);
      for (const e of entries) if (e.who === "me" && e.state === "sending") transmit(e);
    };
    ws.onmessage = (ev) => { try { onFrame(JSON.parse(ev.data)); } catch (err) { showError(String(err)); } };
    ws.onclose = () => {
      setStatus(false);
      setTimeout(connect, backoff);
      backoff = Math.min(backoff * 2, 15000);
    };
  }

  const renderChips = () => window.RelayWeb.renderChips(pendingUploads);

  $("composer").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = $("text").value;
    if (!text.trim() && !pendingUploads.length) return;
    const e = { id: "m" + randomId(), who: "me", text: text, state: "sending",
      uploads: pendingUploads.map((u) => u.upload),
      files: pendingUploads.map((u) => ({ name: u.name, size: u.size })) };
    entries.push(e);
    pendingUploads = [];
    renderChips();
    $("text").value = "";
    showError("");
    save();
    render();
    transmit(e);
  });
  window.RelayWeb.wireComposer("text", () => prefix + "/upload?visitor=" + encodeURIComponent(visitor),
    (data) => { pendingUploads.push(data); renderChips(); });
  $("name").value = localStorage.getItem("relay.name") || "";
  $("name").addEventListener("change", () => {
    localStorage.setItem("relay.name", $("name").value.trim());
    if (ws) ws.close();
  });

  render();
  connect();
})();
