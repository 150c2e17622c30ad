// Shared by the chat and desk pages: DOM lookup, ids, message bodies, upload chips and the composer's file picker.
"use strict";
window.RelayWeb = (function () {
  const $ = (id) => document.getElementById(id);
  const randomId = (size) => {
    const bytes = new Uint8Array(size);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  };
  const showError = (text) => { $("error").textContent = text || ""; };

  function appendBody(div, e) {
    const body = document.createElement("span");
    body.className = "body";
    body.textContent = e.deleted ? "(message deleted)" : e.text + (e.edited ? " (edited)" : "");
    div.append(body);
    if (e.note) {  // the relay's notice about this message (held, rejected…)
      const note = document.createElement("span");
      note.className = "note";
      note.textContent = e.note;
      div.append(note);
    }
    if (e.files && e.files.length) {
      const files = document.createElement("span");
      files.className = "files";
      for (const f of e.files) {
        const a = document.createElement(f.url ? "a" : "span");
        if (f.url) { a.href = f.url; a.target = "_blank"; a.rel = "noopener"; }
        a.textContent = "Attachment: " + f.name + " (" + Math.ceil((f.size || 0) / 1024) + " KB)";
        files.append(a);
      }
      div.append(files);
    }
  }

  function setStatus(online) {
    $("status").className = online ? "status online" : "status offline";
    $("status").textContent = online ? "connected" : "reconnecting…";
  }

  function renderChips(uploads) {
    $("chips").replaceChildren(...uploads.map((u) => {
      const chip = document.createElement("span");
      chip.className = "chip";
      chip.textContent = "Attached: " + u.name;
      return chip;
    }));
  }

  function wireComposer(textId, uploadUrl, onUploaded) {
    $(textId).addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); $("composer").requestSubmit(); }
    });
    $("attach").addEventListener("click", () => $("file").click());
    $("file").addEventListener("change", async () => {
      const file = $("file").files[0];
      $("file").value = "";
      if (!file) return;
      const body = new FormData();
      body.append("file", file, file.name);
      showError("uploading " + file.name + "…");
      try {
        const resp = await fetch(uploadUrl(), { method: "POST", body });
        const data = await resp.json();
        if (!resp.ok) { showError(data.error || "upload failed"); return; }
        onUploaded(data);
        showError("");
      } catch (err) { showError("upload failed: " + err); }
    });
  }

  return { $, randomId, showError, appendBody, setStatus, renderChips, wireComposer };
})();
