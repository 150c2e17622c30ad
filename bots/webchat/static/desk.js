// Employee desk: login, conversations from pushed frames, replies and edits with acks.
"use strict";
(function () {
  const prefix = document.body.dataset.prefix;
  const { $, showError, appendBody, setStatus } = window.RelayWeb;
  const randomId = () => window.RelayWeb.randomId(12);
  let me = null;
  let state = { convs: {}, order: [] };
  let current = null;
  let ws = null;
  let backoff = 500;
  let pendingUploads = [];
  let stopped = false;

  const storeKey = () => "relay.desk." + me.employee;
  const save = () => localStorage.setItem(storeKey(), JSON.stringify(state));

  function conv(id) {
    if (!state.convs[id]) {
      state.convs[id] = { id, client: null, entries: [], unread: 0 };
      state.order.unshift(id);
    }
    return state.convs[id];
  }
  const findEntry = (c, id) => c.entries.find((e) => e.id === id);
  function locate(id) {
    for (const cid of state.order) {
      const e = findEntry(state.convs[cid], id);
      if (e) return [state.convs[cid], e];
    }
    return [null, null];
  }
  function touch(cid) {
    state.order = [cid, ...state.order.filter((x) => x !== cid)];
    if (cid !== current) state.convs[cid].unread += 1;
  }

  function badge(text, cls) {
    const b = document.createElement("span");
    b.className = "badge " + (cls || "");
    b.textContent = text;
    return b;
  }

  function renderList() {
    const nav = $("conversations");
    nav.replaceChildren(...state.order.map((cid) => {
      const c = state.convs[cid];
      const div = document.createElement("div");
      div.className = "conv" + (cid === current ? " active" : "");
      div.dataset.conversation = cid;
      const who = document.createElement("div");
      who.className = "who";
      who.textContent = (c.client && c.client.name) || "Client";
      if (c.unread) { const u = document.createElement("span"); u.className = "unread"; u.textContent = c.unread; who.append(u); }
      const sub = document.createElement("div");
      sub.className = "sub";
      const last = c.entries[c.entries.length - 1];
      sub.textContent = ((c.client && c.client.channel) || "") + (last ? " · " + (last.text || "").slice(0, 40) : "");
      div.append(who, sub);
      div.addEventListener("click", () => select(cid));
      return div;
    }));
  }

  function renderMessages() {
    const box = $("messages");
    if (!current) { box.innerHTML = '<p class="empty">No conversation selected.</p>'; return; }
    const c = state.convs[current];
    box.replaceChildren(...c.entries.map((e) => {
      const div = document.createElement("div");
      div.className = "msg " + e.who + (e.state === "failed" ? " failed" : "") + (e.deleted ? " deleted" : "");
      div.dataset.id = e.id;
      if (e.who !== "notice") {
        const meta = document.createElement("span");
        meta.className = "meta";
        meta.textContent = e.who === "me" ? "You" : (e.from || "");
        if (e.verdict && e.verdict.action && e.verdict.action !== "allow") meta.append(badge(e.verdict.action, e.verdict.action));
        for (const r of (e.verdict && e.verdict.rules) || []) meta.append(badge(r));
        div.append(meta);
      }
      appendBody(div, e);
      if (e.who === "me") {
        const st = document.createElement("span");
        st.className = "state";
        st.textContent = e.state === "sent" ? "sent · edit" : e.state === "failed" ? "not sent: " + (e.error || "") + (e.retry ? " (click to retry)" : "") : "sending…";
        st.addEventListener("click", () => {
          if (e.state === "failed" && e.retry) { e.state = "sending"; save(); renderMessages(); transmit(e); }
          else if (e.state === "sent") editReply(c, e);
        });
        div.append(st);
      }
      return div;
    }));
    box.scrollTop = box.scrollHeight;
  }

  function render() { renderList(); renderMessages(); }

  function select(cid) {
    current = cid;
    state.convs[cid].unread = 0;
    save();
    render();
    $("reply-text").focus();
  }

  function transmit(e) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    ws.send(JSON.stringify(e.frame));
  }

  function editReply(c, original) {
    const text = prompt("Edit your reply", original.text);
    if (text === null || !text.trim() || text === original.text) return;
    const e = { id: "e" + randomId(), who: "edit", text, state: "sending", target: original.id,
      frame: { type: "edit", conversation: c.id, id: "", edits: original.id, text } };
    e.frame.id = e.id;
    original.pendingEdit = e.id;
    c.pendingEdits = c.pendingEdits || [];
    c.pendingEdits.push(e);
    save();
    transmit(e);
  }

  function onFrame(f) {
    if (f.type === "ack" || f.type === "error") {
      const [c, e] = f.id ? locate(f.id) : [null, null];
      if (e) {
        if (f.type === "ack") { e.state = "sent"; e.error = ""; } else { e.state = "failed"; e.error = f.error; e.retry = f.retry === true; }
      } else {
        for (const cid of state.order) {
          const edits = state.convs[cid].pendingEdits || [];
          const ed = edits.find((x) => x.id === f.id);
          if (!ed) continue;
          state.convs[cid].pendingEdits = edits.filter((x) => x !== ed);
          const target = findEntry(state.convs[cid], ed.target);
          if (f.type === "ack" && target) { target.text = ed.text; target.edited = true; }
          if (f.type === "error") showError("edit not sent: " + f.error);
          save(); render();
          return;
        }
        if (f.type === "error") showError(f.error);
        return;
      }
    } else if (f.type === "message" || f.type === "notice") {
      const cid = f.conversation || "relay";
      const c = conv(cid);
      if (!f.conversation) c.client = { name: "Relay notices", channel: "" };
      if (findEntry(c, f.id)) return;
      if (f.client) c.client = f.client;
      if (!current) current = cid;
      c.entries.push({ id: f.id, who: f.type === "notice" ? "notice" : "them", text: f.text || "",
        from: f.from ? f.from.name : "", verdict: f.verdict || null, files: f.attachments || [] });
      touch(cid);
    } else if (f.type === "edit" || f.type === "delete") {
      const [, e] = locate(f.id);
      if (!e) return;
      if (f.type === "edit") { e.text = f.text; e.edited = true; } else e.deleted = true;
    } else return;
    save();
    render();
  }

  function connect() {
    if (stopped) return;
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    ws = new WebSocket(scheme + location.host + prefix + "/ws");
    ws.onopen = () => {
      backoff = 500;
      setStatus(true);
      for (const cid of state.order) {
        for (const e of state.convs[cid].entries) if (e.who === "me" && e.state === "sending") transmit(e);
      }
    };
    ws.onmessage = (ev) => { try { onFrame(JSON.parse(ev.data)); } catch (err) { showError(String(err)); } };
    ws.onclose = async (ev) => {
      setStatus(false);
      if (stopped) return;
      if (ev.code === 4403) {  // deactivated: the server ended every session; drop the local copy too
        if (me) localStorage.removeItem(storeKey());
        showLogin("Your desk access was withdrawn (" + (ev.reason || "employee deactivated") + ").");
        return;
      }
      const who = await fetch(prefix + "/session");
      if (who.status === 401) { showLogin("Your session ended; please log in again."); return; }
      setTimeout(connect, backoff);
      backoff = Math.min(backoff * 2, 15000);
    };
  }

  function showLogin(message) {
    stopped = true;
    me = null;
    $("desk").classList.add("hidden");
    $("logout").classList.add("hidden");
    $("status").classList.add("hidden");
    $("me").textContent = "";
    $("login").classList.remove("hidden");
    $("login-error").textContent = message || "";
  }

  function showDesk(who) {
    me = who;
    stopped = false;
    try { state = JSON.parse(localStorage.getItem(storeKey()) || "null") || { convs: {}, order: [] }; }
    catch (e) { state = { convs: {}, order: [] }; }
    current = state.order[0] || null;
    $("login").classList.add("hidden");
    $("desk").classList.remove("hidden");
    $("logout").classList.remove("hidden");
    $("status").classList.remove("hidden");
    $("me").textContent = who.name;
    render();
    connect();
  }

  $("login").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("login-error").textContent = "";
    const body = new URLSearchParams({ employee: $("login-employee").value, password: $("login-password").value });
    try {
      const resp = await fetch(prefix + "/login", { method: "POST", body });
      const data = await resp.json();
      if (!resp.ok) { $("login-error").textContent = data.error || "login failed"; return; }
      $("login-password").value = "";
      showDesk(data);
    } catch (err) { $("login-error").textContent = "login failed: " + err; }
  });

  $("logout").addEventListener("click", async () => {
    const key = me ? storeKey() : null;
    stopped = true;
    await fetch(prefix + "/logout", { method: "POST" });
    if (key) localStorage.removeItem(key);
    if (ws) ws.close();
    showLogin("Logged out.");
  });

  const renderChips = () => window.RelayWeb.renderChips(pendingUploads);

  $("composer").addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (!current) { showError("Pick a conversation first."); return; }
    const text = $("reply-text").value;
    if (!text.trim() && !pendingUploads.length) return;
    const c = state.convs[current];
    const e = { id: "r" + randomId(), who: "me", text, state: "sending",
      files: pendingUploads.map((u) => ({ name: u.name, size: u.size })) };
    e.frame = { type: "reply", conversation: c.id, id: e.id, text };
    if (pendingUploads.length) e.frame.attachments = pendingUploads.map((u) => u.upload);
    c.entries.push(e);
    pendingUploads = [];
    renderChips();
    $("reply-text").value = "";
    showError("");
    save();
    render();
    transmit(e);
  });
  window.RelayWeb.wireComposer("reply-text", () => prefix + "/upload", (data) => { pendingUploads.push(data); renderChips(); });

  (async () => {
    const resp = await fetch(prefix + "/session");
    if (resp.ok) showDesk(await resp.json()); else showLogin("");
  })();
})();
