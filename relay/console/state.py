"""The console's share of the running relay: sessions, the login throttle, the reviewers, a
cache of holds and erasure requests read incrementally (only events after the last one seen),
and the audit trail: every restricted view or export started here is an `admin.action`."""

from __future__ import annotations

import asyncio
from typing import Any, Mapping

from aiohttp import web

from relay.config import ConfigError
from relay.evidence.collect import Ev, is_restricted, iter_events
from relay.login_throttle import LoginThrottle, parse_proxies
from relay.console.sessions import Sessions


CONSOLE_KEY: web.AppKey["Console"] = web.AppKey("console", object)  # type: ignore[arg-type]
STATE_KINDS = ("hold.added", "hold.released", "erasure.requested")


class Console:
    def __init__(self, relay: Any) -> None:
        from relay.compliance.review import compliance_settings

        self.relay = relay
        raw_web = relay.config.raw.get("web") or {}
        try:
            self.trusted_proxies = parse_proxies(raw_web.get("trusted_proxies"))
        except ValueError as exc:
            raise ConfigError([str(exc)]) from exc
        secure = raw_web.get("secure_cookies", "auto")
        self.secure_cookies = relay.config.public_url.startswith("https://") if secure == "auto" else bool(secure)
        self.settings = compliance_settings(relay.config.raw)
        self.sessions = Sessions()
        self.throttle = LoginThrottle()
        self._state_events: list[Ev] = []
        self._state_seq = 0
        self._state_lock = asyncio.Lock()
        self._holds: dict[str, Any] = {}
        self._restricted: dict[str, int] = {}
        self.exports: dict[str, Any] = {}
        self.exports_read = False  # finished exports of earlier runs read from disk (console.exports)
        self.feed: Any = None
        self.priming: "asyncio.Task[Any] | None" = None
        self.closing = False

    def reviewer(self, rid: str) -> Any:
        return self.settings.reviewers.get(rid)

    @property
    def journal(self) -> Any:
        return self.relay.journal

    async def state(self) -> tuple[Mapping[str, Any], Mapping[str, int]]:
        """(active holds, restricted clients) as `relay.compliance.holds.load_state` gives them, reading
        only the events journaled since the last call."""
        from relay.compliance.holds import active_holds, restricted_clients

        head = self.journal.head[0]
        if head == self._state_seq:
            return self._holds, self._restricted
        async with self._state_lock:
            head = self.journal.head[0]
            if head != self._state_seq:
                new = await iter_events(self.journal, STATE_KINDS, since_seq=self._state_seq)
                self._state_seq = max([head, *(ev.seq for ev in new)])
                if new:
                    self._state_events.extend(new)
                    self._holds = active_holds(self._state_events)
                    self._restricted = restricted_clients(self._state_events)
        return self._holds, self._restricted

    async def restricted(self) -> Mapping[str, int]:
        return (await self.state())[1]

    @staticmethod
    def is_restricted(seq: int, client_channel: str | None, client_user: str | None,
                      restricted: Mapping[str, int]) -> bool:
        if client_user is None:
            return False
        return is_restricted(seq, {"channel": client_channel or "", "user": client_user}, restricted)

    async def audit(self, actor: str, action: str, args: dict[str, Any]) -> int:
        """Access to the record is on the record: one `admin.action` by the logged-in reviewer."""
        ev = await self.journal.append("admin.action", {"actor": actor, "action": action, "args": args})
        return ev.seq

    async def act(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        """Run a registered admin action in-process, exactly as the CLI's call would."""
        return await self.relay.workflow.actions[name](self.relay, params)

    def close_streams(self) -> None:
        """On shutdown: end the live feed's and the exports' event streams at once."""
        self.closing = True
        if self.feed is not None:
            self.feed.close_streams()
        for job in self.exports.values():
            job.changed.set()

    async def stop(self) -> None:
        """End the live feed and any export still running (its directory keeps no manifest)."""
        if self.feed is not None:
            await self.feed.stop()
        if self.priming is not None:
            self.priming.cancel()
            await asyncio.gather(self.priming, return_exceptions=True)
        tasks = [job.task for job in self.exports.values() if job.task is not None and not job.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
