"""The one aiohttp Application's own routes: health, metrics, the admin API, and `/`.

Channels add their webhooks and pages to the same Application in their `create`; this
module adds what belongs to the relay itself.
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import Any

from aiohttp import web

from relay.actions import AdminError

log = logging.getLogger("relay.web")
RELAY_KEY: web.AppKey[Any] = web.AppKey("relay", object)
"""The RelayApp serving this Application (typed loosely: this module is imported by relay.app)."""


async def healthz(request: web.Request) -> web.Response:
    """503 while a check (e.g. the scheduled journal verification) fails, so monitoring notices."""
    relay = request.app[RELAY_KEY]
    ok = relay.health.ok
    return web.json_response({"ok": ok, "channels": sorted(relay.channels), "pending": relay.outbox.pending,
                              "policy_version": relay.policies.version, "checks": relay.health.to_dict()},
                             status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format, so any scraper can watch throughput, refusals and backlog."""
    relay = request.app[RELAY_KEY]
    s = relay.hub.stats
    lines = []
    for name, value, help_ in (
        ("relay_messages_received_total", s.received, "Items journaled as message.received."),
        ("relay_duplicates_total", s.duplicates, "Redeliveries recognised and acknowledged without a new entry."),
        ("relay_refused_total", s.refused, "Staff-side messages refused (unknown or unassigned sender)."),
        ("relay_blocked_total", s.blocked, "Messages blocked by policy."),
        ("relay_quarantined_total", s.quarantined, "Messages held for review."),
        ("relay_flagged_total", s.flagged, "Messages delivered and queued for review."),
        ("relay_redacted_total", s.redacted, "Messages delivered with redactions."),
        ("relay_policy_errors_total", s.policy_errors, "Policy evaluations that failed (held for review)."),
        ("relay_delivered_total", relay.outbox.delivered, "Deliveries journaled as message.delivered."),
        ("relay_delivery_failed_total", relay.outbox.failed, "Deliveries that failed permanently."),
        ("relay_delivery_retries_total", relay.outbox.retries, "Delivery attempts that will be retried."),
        ("relay_outbox_pending", relay.outbox.pending, "Deliveries waiting in the outbox."),
    ):
        kind = "gauge" if name.endswith("pending") else "counter"
        lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", f"{name} {value}"]
    lines += relay.health.metric_lines()
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")


async def index(request: web.Request) -> web.Response:
    raise web.HTTPFound("/chat")


async def admin_api(request: web.Request) -> web.Response:
    """`POST /admin/api/<action>` with the bearer token from <data_dir>/admin.token; loopback only."""
    relay = request.app[RELAY_KEY]
    peer = request.remote or ""
    if peer not in ("127.0.0.1", "::1") and not peer.startswith("127."):
        return web.json_response({"error": "the admin API answers on loopback only"}, status=403)
    auth = request.headers.get("Authorization", "")
    if not auth.startswith("Bearer ") or not hmac.compare_digest(auth[7:], relay.admin_token):
        return web.json_response({"error": "missing or wrong admin token"}, status=401)
    name = request.match_info["action"]
    fn = relay.workflow.actions.get(name)
    if fn is None:
        return web.json_response({"error": f"unknown admin action {name!r}"}, status=404)
    try:
        params: Any = await request.json()
    except json.JSONDecodeError:
        return web.json_response({"error": "body must be a JSON object"}, status=400)
    if not isinstance(params, dict):
        return web.json_response({"error": "body must be a JSON object"}, status=400)
    try:
        result = await fn(relay, params)
    except AdminError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    except Exception as exc:
        log.exception("admin action %s failed", name)
        return web.json_response({"error": f"{name} failed: {exc}"}, status=500)
    return web.json_response(result)


def setup_web(relay: Any) -> None:
    """Routes; the admin API serves the actions of the workflow the app was handed."""
    app = relay.web
    app[RELAY_KEY] = relay
    app.router.add_get("/", index)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/admin/api/{action}", admin_api)
    from relay.console import setup_console

    setup_console(relay)
