// The console's small enhancements; every page works without them.
(function () {
  "use strict";
  const csrf = document.querySelector("meta[name=csrf-token]")?.content || "";

  // Queue: live items over server-sent events, j/k/x/o keys.
  const rows = document.getElementById("queue-rows");
  const note = document.getElementById("live-note");
  if (rows && note && window.EventSource) {
    let after = note.dataset.after || "0";
    const source = new EventSource("/console/queue/events?after=" + encodeURIComponent(after));
    let fresh = 0;
    source.addEventListener("item", (ev) => {
      const data = JSON.parse(ev.data);
      if (rows.querySelector(`tr[data-message-id="${CSS.escape(data.item.message_id)}"]`)) return;
      if (note.dataset.live === "prepend") {
        rows.querySelector("tr.empty")?.remove();
        rows.insertAdjacentHTML("afterbegin", data.html);
        rows.firstElementChild.classList.add("new");
        fresh += 1;
        note.textContent = fresh + " new item(s) arrived live.";
      } else {
        fresh += 1;
        note.innerHTML = "";
        const a = document.createElement("a");
        a.href = location.href; a.id = "live-reload";
        a.textContent = fresh + " new item(s) arrived: reload to see them with these filters";
        note.appendChild(a);
      }
    });
  }
  if (rows) {
    let current = -1;
    const list = () => [...rows.querySelectorAll("tr[data-message-id]")];
    const focusRow = (i) => {
      const all = list();
      if (!all.length) return;
      current = Math.max(0, Math.min(all.length - 1, i));
      all.forEach((r) => r.classList.remove("current"));
      all[current].classList.add("current");
      all[current].querySelector("a.open-item").focus();
    };
    document.addEventListener("keydown", (ev) => {
      if (ev.altKey || ev.ctrlKey || ev.metaKey) return;
      const tag = (ev.target.tagName || "").toLowerCase();
      if (["input", "select", "textarea"].includes(tag)) return;
      if (ev.key === "j") { focusRow(current + 1); ev.preventDefault(); }
      else if (ev.key === "k") { focusRow(current - 1); ev.preventDefault(); }
      else if (ev.key === "x" && current >= 0) { const box = list()[current].querySelector("input[type=checkbox]"); box.checked = !box.checked; ev.preventDefault(); }
      else if (ev.key === "o" && current >= 0) { location.href = list()[current].querySelector("a.open-item").href; }
    });
  }
  document.addEventListener("keydown", (ev) => {
    if (ev.key !== "/" || ev.altKey || ev.ctrlKey || ev.metaKey) return;
    const tag = (ev.target.tagName || "").toLowerCase();
    if (["input", "select", "textarea"].includes(tag)) return;
    const first = document.querySelector("form.filters input, form.filters select");
    if (first) { first.focus(); ev.preventDefault(); }
  });

  // Export: live progress until finished.
  const progress = document.getElementById("export-progress");
  if (progress && progress.dataset.job && window.EventSource && progress.dataset.done !== "1") {
    const source = new EventSource("/console/exports/" + encodeURIComponent(progress.dataset.job) + "/events");
    source.addEventListener("progress", (ev) => { progress.textContent += ev.data + "\n"; progress.scrollTop = 1e9; });
    source.addEventListener("done", () => { source.close(); location.reload(); });
  }
  document.getElementById("print")?.addEventListener("click", () => window.print());
  void csrf;
})();
