"""The Policies page: the active set's version and rules, the last reload attempt (its errors
with file:line), the rule tests' results and, on request, the shadow report (it reads the
journal's verdicts, so it runs only when asked)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from relay.console.auth import Ctx, guarded
from relay.console.layout import e
from relay.evidence.collect import iso
from relay.policy.ruletests import run_rule_tests


@guarded()
async def policies_page(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    relay = ctx.console.relay
    ps = relay.policies
    watcher = relay.watcher
    errors = list(getattr(watcher, "last_errors", []) or [])
    reload_html = ("<div id='reload-errors' class='error' role='alert'><p>The last edit of the policy files was rejected;"
                   " the set below stays active. Fix these and save again:</p><ul>"
                   + "".join(f"<li><code>{e(x)}</code></li>" for x in errors) + "</ul></div>"
                   if errors else "<p id='reload-ok'>The last reload succeeded: the files on disk are the active set.</p>")
    reload_html = _attempt_html(getattr(watcher, "last_reload", None)) + reload_html
    loaded, failed_at = await _last_reload(ctx.console.journal)
    if loaded is not None:
        reload_html += (f"<p id='last-reload'>Active set <code>{e(loaded['version'][:12])}…</code> journaled"
                        f" {e(iso(loaded['ts']))} (seq {int(loaded['seq'])}).</p>")
    if failed_at is not None:
        reload_html += (f"<p id='last-failure'>Last rejected edit journaled {e(iso(failed_at['ts']))}"
                        f" (seq {int(failed_at['seq'])}): " + e("; ".join(failed_at["errors"])) + "</p>")
    results = run_rule_tests(ps)
    failed = [r for r in results if not r.ok]
    tests_html = (f"<p id='tests-summary'>{len(results) - len(failed)} of {len(results)} rule test(s) pass.</p>"
                  + ("<ul id='tests-failed'>" + "".join(f"<li><code>{e(r.describe())}</code></li>" for r in failed) + "</ul>"
                     if failed else "")
                  + ("<p>Rules without tests (lint): " + e(", ".join(str(x) for x in ps.rules_without_tests)) + "</p>"
                     if ps.rules_without_tests else ""))
    rows = "".join(
        f"<tr><td>{e(r.id)}</td><td>{e(r.title)}</td><td>{e(r.severity)}</td><td class='v-{e(r.action)}'>{e(r.action)}</td>"
        f"<td>{e(r.file)}:{int(r.line)}</td><td>{len(r.tests)}</td><td>{e(r.sla or '')}</td></tr>" for r in ps.rules)
    files = "".join(f"<li><code>{e(p)}</code> {e(d[:12])}…</li>" for p, d in sorted(ps.files.items()))
    shadow = ""
    if relay.shadow_watcher is not None:
        if request.query.get("shadow") == "1":
            from relay.compliance.backtest import shadow_report
            rep = await shadow_report(ctx.console.journal)
            shadow = "<h2>Shadow report</h2><pre id='shadow-report'>" + e(_lines(rep)) + "</pre>"
        else:
            shadow = ("<h2>Shadow report</h2><p>A shadow set is configured (" + e(relay.shadow_watcher.current.version[:12])
                      + "…). <a href='/console/policies?shadow=1' id='shadow-run'>Compare it with the live verdicts</a>"
                      " (reads the journal's verdicts; may take a while on a large journal).</p>")
    body = (f"<p>Active set <code id='policy-version'>{e(ps.version)}</code> from <code>{e(relay.config.policies_dir)}</code>,"
            f" {len(ps.rules)} rule(s).</p>" + reload_html
            + f"<h2>Files</h2><ul>{files}</ul><h2>Rules</h2><table id='rules'><thead><tr><th>Rule</th><th>Title</th>"
              "<th>Severity</th><th>Action</th><th>Where</th><th>Tests</th><th>SLA (s)</th></tr></thead>"
              f"<tbody>{rows}</tbody></table><h2>Rule tests</h2>{tests_html}{shadow}")
    return ctx.page("Policies", body, current="/console/policies")


RESULTS = {"loaded": "a new set was loaded and is active",
           "unchanged": "the files compile to the set already active",
           "rejected": "the edit was rejected; the set below stays active"}


def _attempt_html(attempt: Any) -> str:
    """The watcher's last reload attempt as it saw it: time, result, the errors (file:line)."""
    if attempt is None:
        return "<p id='reload-attempt'>No reload attempt since the relay started.</p>"
    errors = ("<ul id='reload-attempt-errors'>" + "".join(f"<li><code>{e(x)}</code></li>" for x in attempt.errors)
              + "</ul>" if attempt.errors else "")
    return (f"<p id='reload-attempt' data-result='{e(attempt.result)}'>Last reload attempt"
            f" <time id='reload-attempt-at' data-at='{attempt.at:.3f}'>{e(iso(attempt.at))}</time>: <strong id='reload-attempt-result'>"
            f"{e(attempt.result)}</strong> ({e(RESULTS.get(attempt.result, attempt.result))}); active set"
            f" <code>{e(attempt.version[:12])}…</code>.</p>" + errors)


async def _last_reload(journal: Any) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The newest `policy.loaded` (live set) and `policy.reload_failed`, from the events without a
    conversation (the `events_conversation` index), not a scan of every event."""
    loaded = failed = None
    rows = await journal.fetchall(
        "SELECT seq, ts, kind, body_json FROM events WHERE conversation IS NULL"
        " AND kind IN ('policy.loaded', 'admin.action') ORDER BY seq DESC LIMIT 5000")
    for r in rows:
        body = json.loads(r["body_json"])
        if loaded is None and r["kind"] == "policy.loaded" and not body.get("shadow"):
            loaded = {"seq": r["seq"], "ts": r["ts"], "version": str(body.get("version", ""))}
        elif failed is None and r["kind"] == "admin.action" and body.get("action") == "policy.reload_failed":
            failed = {"seq": r["seq"], "ts": r["ts"], "errors": [str(x) for x in (body.get("args") or {}).get("errors", [])]}
        if loaded is not None and failed is not None:
            break
    return loaded, failed


def _lines(rep: dict[str, object], indent: str = "") -> str:
    out = []
    for k, v in rep.items():
        if isinstance(v, dict):
            out.append(f"{indent}{k}:")
            out.append(_lines(v, indent + "  "))
        elif isinstance(v, (list, tuple)):
            out.append(f"{indent}{k}:" + ("" if v else " none"))
            out += [f"{indent}  - {json.dumps(x, ensure_ascii=False, sort_keys=True)}" for x in v]
        else:
            out.append(f"{indent}{k}: {v}")
    return "\n".join(out)


def add_routes(r: web.UrlDispatcher) -> None:
    r.add_get("/console/policies", policies_page)
