// Employee desk: login, conversations and history from the server, live pushes, replies and edits with acks.
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
  let requests = {};  // request frame id -> what it asked for
  let keepScroll = false;
  const HISTORY_PAGE = 30;
  const MAX_CONVERSATION_PAGES = 5;

  const storeKey = () => "relay.desk." + me.employee;
  const save = () => localStorage.setItem(storeKey(), JSON.stringify(state));

  function conv(id) {
    if (!state.convs[id]) {
      state.convs[id] = { id, client: null, entries: [], unread: 0, more: false, before: null };
      state.order.unshift(id);
    }
    return state.convs[id];
  }

  function ask(frame, what) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    frame.id = "q" + randomId();
    requests[frame.id] = what;
    ws.send(JSON.stringify(frame));
  }
  const askConversations = (before, page, all) =>
    ask(before ? { type: "conversations", before } : { type: "conversations" }, { kind: "conversations", page, all });
  function askHistory(c, older) {
    if (c.loading) return;
    c.loading = true;
    const frame = { type: "history", conversation: c.id, limit: HISTORY_PAGE };
    if (older && c.before) frame.before = c.before;
    ask(frame, { kind: "history", conversation: c.id, older });
  }

  // A message as the server's history has it (what the recipient received, its verdict and state).
  const fromServer = (m) => ({ id: m.id, message: m.message, seq: m.seq, who: m.who, text: m.text || "",
    from: m.from ? m.from.name : "", verdict: m.verdict || null, files: m.attachments || [],
    state: m.who === "me" ? "sent" : "", delivery: m.state, edited: !!m.edited, deleted: !!m.deleted,
    withheld: m.withheld || "" });

  function onConversations(f, what) {
    const listed = new Set(f.conversations.map((x) => x.conversation));
    if (what.page === 0) {  // the server's list is the truth: drop conversations handed away
      for (const cid of state.order) if (cid !== "relay" && !listed.has(cid)) delete state.convs[cid];
      state.order = state.order.filter((cid) => state.convs[cid]);
    }
    for (const x of f.conversations) {
      const c = conv(x.conversation);
      c.client = x.client;
      c.last = x.last;
      c.handedTo = "";  // listed: it is (again) mine
      if (x.withheld) c.withheld = x.withheld;
    }
    const relay = state.order.filter((cid) => cid === "relay");
    const rest = state.order.filter((cid) => cid !== "relay");
    rest.sort((a, b) => (state.convs[b].last || 0) - (state.convs[a].last || 0));
    state.order = [...rest, ...relay];
    if (!current || !state.convs[current]) current = state.order[0] || null;
    for (const x of f.conversations) {  // on connect all of them; later only those new to this page
      const c = state.convs[x.conversation];
      if (what.all || !c.loaded) { c.loading = false; c.loaded = true; askHistory(c, false); }
    }
    if (f.more && what.page + 1 < MAX_CONVERSATION_PAGES) askConversations(f.before, what.page + 1, what.all);
  }

  function onHistory(f, what) {
    const c = state.convs[f.conversation];
    if (!c) return;
    c.loading = false;
    const incoming = f.messages.map(fromServer);
    if (what.older) {
      c.entries = [...incoming.filter((e) => !findEntry(c, e.id)), ...c.entries];
      keepScroll = f.conversation === current;
    } else {
      const ids = new Set(incoming.map((e) => e.id));
      const local = c.entries.filter((e) => !ids.has(e.id) && (e.who === "notice" || e.state === "sending" || e.state === "failed"));
      c.entries = [...incoming, ...local];
    }
    c.more = f.more;
    if (f.messages.length) c.before = f.before;
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

  const MINE = { delivered: "sent · delivered · edit", released: "sent · cleared by the review · edit",
    held: "held for compliance review, not delivered",
    rejected: "rejected by compliance, not delivered", blocked: "blocked by policy, not delivered",
    failed: "not delivered", undeliverable: "not delivered", refused: "not forwarded" };
  const HELD_BACK = { held: "held for compliance review", rejected: "rejected by compliance", blocked: "blocked by policy" };

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
      div.className = "conv" + (cid === current ? " active" : "") + (c.handedTo ? " handed" : "");
      div.dataset.conversation = cid;
      const who = document.createElement("div");
      who.className = "who";
      who.textContent = (c.client && c.client.name) || "Client";
      if (c.unread) { const u = document.createElement("span"); u.className = "unread"; u.textContent = c.unread; who.append(u); }
      const sub = document.createElement("div");
      sub.className = "sub";
      const last = c.entries[c.entries.length - 1];
      sub.textContent = ((c.client && c.client.channel) || "") + (c.handedTo ? " · handed over to " + c.handedTo :
        last ? " · " + (last.text || "").slice(0, 40) : "");
      div.append(who, sub);
      div.addEventListener("click", () => select(cid));
      return div;
    }));
  }

  function renderMessages() {
    const box = $("messages");
    if (!current) { box.innerHTML = '<p class="empty">No conversation selected.</p>'; return; }
    const c = state.convs[current];
    const fromBottom = box.scrollHeight - box.scrollTop;
    box.replaceChildren(...c.entries.map((e) => {
      const div = document.createElement("div");
      div.className = "msg " + e.who + (e.marker ? " marker" : "") + (e.state === "failed" ? " failed" : "") + (e.deleted ? " deleted" : "") +
        (e.delivery && e.delivery !== "delivered" && e.delivery !== "pending" ? " " + e.delivery : "");
      div.dataset.id = e.id;
      if (e.who !== "notice") {
        const meta = document.createElement("span");
        meta.className = "meta";
        meta.textContent = e.who === "me" ? "You" : (e.from || "");
        if (e.verdict && e.verdict.action && e.verdict.action !== "allow") meta.append(badge(e.verdict.action, e.verdict.action));
        for (const r of (e.verdict && e.verdict.rules) || []) meta.append(badge(r));
        div.append(meta);
      }
      if (e.withheld) appendBody(div, { text: "[" + e.withheld + "]" });
      else if (e.who !== "me" && !e.text && HELD_BACK[e.delivery]) appendBody(div, { text: "[" + HELD_BACK[e.delivery] + "]" });
      else appendBody(div, e);
      if (e.who === "me") {
        const st = document.createElement("span");
        st.className = "state";
        st.textContent = e.state === "sent" ? (MINE[e.delivery] || "sent · edit") : e.state === "failed" ? "not sent: " + (e.error || "") + (e.retry ? " (click to retry)" : "") : "sending…";
        st.addEventListener("click", () => {
          if (e.state === "failed" && e.retry) { e.state = "sending"; save(); renderMessages(); transmit(e); }
          else if (e.state === "sent") editReply(c, e);
        });
        div.append(st);
      }
      return div;
    }));
    if (c.handedTo) {  // handed away while open here: read-only until the list is reloaded
      const div = document.createElement("div");
      div.className = "msg notice handed";
      div.textContent = "Handed over to " + c.handedTo + "; read-only here.";
      box.append(div);
    }
    if (keepScroll) box.scrollTop = box.scrollHeight - fromBottom; else box.scrollTop = box.scrollHeight;
    keepScroll = false;
  }

  const readOnly = (c) => "This conversation was handed over to " + c.handedTo + "; it is read-only here.";

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
    if (c.handedTo) { showError(readOnly(c)); return; }
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
    const what = f.id ? requests[f.id] : null;
    if (what) {
      delete requests[f.id];
      if (f.type === "conversations") onConversations(f, what);
      else if (f.type === "history") onHistory(f, what);
      else if (f.type === "error") {
        if (what.conversation && state.convs[what.conversation]) state.convs[what.conversation].loading = false;
        showError(f.error);
      }
      save(); render();
      return;
    }
    if (f.type === "ack" || f.type === "error") {
      const [c, e] = f.id ? locate(f.id) : [null, null];
      if (e) {
        if (f.type === "ack") {
          if (e.state !== "sent") { e.state = "sent"; e.error = ""; }
          if (f.message) {  // what the client is sent (redacted, disclaimers) and the verdict
            const m = fromServer(f.message);
            e.text = m.text; e.verdict = m.verdict; e.message = m.message; e.seq = m.seq;
            if (!e.delivery || e.delivery === "pending") e.delivery = m.delivery;
          }
        } else { e.state = "failed"; e.error = f.error; e.retry = f.retry === true; }
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
    } else if (f.type === "notice" && f.answers && f.conversation && state.convs[f.conversation] &&
               findEntry(state.convs[f.conversation], f.answers)) {
      const e = findEntry(state.convs[f.conversation], f.answers);  // a notice about one of my replies
      e.delivery = f.about || e.delivery;
      e.note = f.text || "";
      if (f.about === "refused") askConversations(null, 0, false);  // e.g. handed to a colleague meanwhile
    } else if (f.type === "handed_over" && f.conversation && state.convs[f.conversation]) {
      state.convs[f.conversation].handedTo = (f.to && f.to.name) || "a colleague";
    } else if (f.type === "message" || f.type === "notice") {
      const cid = f.conversation || "relay";
      const known = !!state.convs[cid];
      const c = conv(cid);
      if (!f.conversation) c.client = { name: "Relay notices", channel: "" };
      const held = findEntry(c, f.id);
      if (held && f.type === "message" && HELD_BACK[held.delivery] && !held.text) {  // released by a reviewer
        Object.assign(held, { text: f.text || "", verdict: f.verdict || held.verdict, files: f.attachments || [],
          delivery: "delivered" });
        save(); render();
        return;
      }
      if (held) return;
      if (f.client) c.client = f.client;
      if (!current) current = cid;
      if (f.about === "handover") {  // the history comes from the server: one line, not the text of it
        c.handedTo = "";
        c.entries.push({ id: f.id, who: "notice", marker: true, files: [],
          text: f.from && f.from.name ? "Handed over from " + f.from.name : "Assigned to you" });
      } else {
        c.entries.push({ id: f.id, who: f.type === "notice" ? "notice" : "them", text: f.text || "",
          from: f.from ? f.from.name : "", verdict: f.verdict || null, files: f.attachments || [] });
      }
      touch(cid);
      if (!known && f.conversation) askConversations(null, 0, false);  // e.g. just handed over: its client and history
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
      requests = {};
      for (const cid of state.order) state.convs[cid].loading = false;
      for (const cid of state.order) state.convs[cid].loaded = false;
      askConversations(null, 0, true);
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

  $("messages").addEventListener("scroll", () => {  // older messages, a page at a time
    const c = current && state.convs[current];
    if (c && c.more && !c.loading && $("messages").scrollTop < 40) askHistory(c, true);
  });

  $("composer").addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (!current) { showError("Pick a conversation first."); return; }
    const text = $("reply-text").value;
    if (!text.trim() && !pendingUploads.length) return;
    const c = state.convs[current];
    if (c.handedTo) { showError(readOnly(c)); return; }
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
