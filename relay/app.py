"""Assembles a running relay from a config: journal, policies, channels, hub, outbox, web.

`RelayApp.start()` is what `relay run` and the end-to-end tests use, so both exercise the same
start-up order: the journal first (nothing can be accepted before it is durable), then the
policy set, the channels' routes, the outbox resume, the web server, and last the channels'
receiving loops.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import secrets
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, Mapping

from aiohttp import web

from bots.base import Channel, ChannelContext, EmployeeInfo, LiveConversations, StaffSessions, load_factory
from relay.actions import Workflow
from relay.config import Config, ConfigError, config_from_dict
from relay.health import Health
from relay.hub_lookups import early_receipts
from relay.journal import Journal, lookups
from relay.channel_leases import ChannelLeases, exclusive_names
from relay.journal.backend import open_journal
from relay.channel_check import check_channels
from relay.private_files import private_dir
from relay.outbox import Outbox
from relay.policy import PolicyLoadError, PolicySet, PolicyWatcher
from relay.routing import Router

log = logging.getLogger("relay.app")


class JournalState:
    """A channel's durable key/value state, kept in the journal database."""

    def __init__(self, journal: Journal, channel: str) -> None:
        self.journal = journal
        self.namespace = f"channel:{channel}"

    async def get(self, key: str) -> str | None:
        return await self.journal.kv_get(self.namespace, key)

    async def put(self, key: str, value: str) -> None:
        await self.journal.kv_put(self.namespace, key, value)


class AlreadyRunning(RuntimeError):
    """Another relay process holds the journal's writer lock."""


def _lock(data_dir: Path) -> int:
    private_dir(data_dir)
    fd = os.open(data_dir / "relay.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise AlreadyRunning(f"another relay process is using {data_dir} (lock {data_dir / 'relay.lock'})") from None
    return fd


async def _policy_loaded(journal: Journal, ps: PolicySet, directory: Path, shadow: bool = False,
                         warning: str = "") -> None:
    """Journal `policy.loaded` unless the newest one already names this version; `warning` is
    the watcher's rule-count drop warning for this set, kept in the event."""
    rows = await journal.fetchall(lookups.LATEST_POLICY_LOADED, (1 if shadow else 0,))
    if rows and rows[0]["v"] == ps.version:
        return
    body: dict[str, Any] = {"version": ps.version, "files": dict(ps.files), "dir": str(directory), "rules": len(ps.rules)}
    if warning:
        body["warning"] = warning
        log.warning("policy set %s: %s", ps.version[:12], warning)
    if shadow:
        body["shadow"] = True
    await journal.append("policy.loaded", body)


def default_workflow() -> Workflow:
    """The compliance workflow (review, holds, handover…): what `relay run` serves."""
    from relay.compliance.actions import WORKFLOW

    return WORKFLOW


class RelayApp:
    """A running (or offline) relay; `stop()` undoes `start()` in reverse order."""

    def __init__(self, config: Config, workflow: Workflow) -> None:
        self.config = config
        self.workflow = workflow
        self.journal: Journal
        self.router: Router
        self.outbox: Outbox
        self.hub: Any
        self.channels: dict[str, Channel] = {}
        self.web = web.Application(client_max_size=config.max_attachment_bytes + 1024 * 1024)
        self.runner: web.AppRunner | None = None
        self.port = config.port
        self.offline = False
        self.watcher: PolicyWatcher | None = None
        self.shadow_watcher: PolicyWatcher | None = None
        self.admin_token = ""
        self.health = Health()
        """Checks and gauges the workflow's tasks report (journal verification…): /healthz, /metrics."""
        self._lock_fd: int | None = None
        self._started_channels: list[Channel] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._channel_employees: dict[str, dict[str, EmployeeInfo]] = {}

    async def _reopened(self, channel: str, address: str, conversation: str) -> None:
        """A channel lost a conversation's topic and opened a new one: the workflow's history
        (journaled like any notice), or a plain notice without a workflow."""
        hook = self.workflow.reopened_function()
        if hook is not None:
            await hook(self, channel, address, conversation)
            return
        await self.hub.notify(channel, address, f"The topic of conversation {conversation} was deleted;"
                              " it continues here.", conversation=conversation,
                              key=f"reopened:{conversation}:{self.journal.head[0]}")

    @property
    def policies(self) -> PolicySet:
        assert self.watcher is not None
        return self.watcher.current

    @property
    def base_url(self) -> str:
        host = self.config.host if self.config.host not in ("0.0.0.0", "::") else "127.0.0.1"
        return f"http://{host}:{self.port}"

    @classmethod
    async def start(cls, config: Config | Mapping[str, Any], *, offline: bool = False,
                    base: Path | None = None, workflow: Workflow | None = None) -> "RelayApp":
        """Start everything; with `offline`, only journal, policies, hub and routing (for CLI writes).
        `workflow`: the admin actions and background tasks above the core (the compliance
        workflow's when not given)."""
        cfg = config if isinstance(config, Config) else config_from_dict(config, base=base)
        app = cls(cfg, workflow if workflow is not None else default_workflow())
        try:
            await app._start(offline)
        except BaseException:
            await app.stop()
            raise
        return app

    async def _start(self, offline: bool) -> None:
        from relay.hub import Hub
        from relay.web import setup_web

        cfg = self.config
        self.offline = offline
        if not offline:
            check_channels(cfg)  # before anything is written: a wrong block is a config line, not a traceback
        self._lock_fd = _lock(cfg.data_dir)
        self.journal = await open_journal(
            cfg.data_dir, url=cfg.journal_url, hmac_key=cfg.hmac_key, checkpoint_every=cfg.checkpoint_every,
            checkpoint_seconds=cfg.checkpoint_seconds, checkpoint_dir=cfg.checkpoint_dir, synchronous=cfg.synchronous,
            witnesses=cfg.witnesses,
            **({"lease_seconds": cfg.journal_lease_seconds} if cfg.journal_url else {}),
        )
        self.watcher = PolicyWatcher(cfg.policies_dir, on_loaded=self._on_policy_loaded,
                                     on_error=self._on_policy_error, interval=cfg.policies_reload)
        try:
            await self.watcher.start()
        except PolicyLoadError as exc:
            raise ConfigError([f"policies: {e}" for e in exc.errors]) from exc
        shadow_current = None
        if cfg.shadow_policies_dir is not None:
            self.shadow_watcher = PolicyWatcher(cfg.shadow_policies_dir, on_loaded=self._on_shadow_loaded,
                                                on_error=self._on_policy_error, interval=cfg.policies_reload)
            try:
                await self.shadow_watcher.start()
            except PolicyLoadError as exc:
                raise ConfigError([f"shadow policies: {e}" for e in exc.errors]) from exc
            shadow_current = lambda: self.shadow_watcher.current if self.shadow_watcher else None  # noqa: E731

        self.router = Router(cfg, self.journal)
        await self.router.load()
        self.router.on_change = self._employee_changed
        self.outbox = Outbox(self.journal, self.channels, cfg.outbox_base_delay, cfg.outbox_max_delay,
                             give_up_after=cfg.outbox_give_up_after,
                             channel_give_up={n: c.give_up_after for n, c in cfg.channels.items()
                                              if c.give_up_after is not None})
        self.hub = Hub(cfg, self.journal, self.router, self.outbox, lambda: self.policies, shadow_current)
        self.outbox.on_permanent = self.hub.on_permanent_failure
        self.outbox.on_delivered = partial(early_receipts, self.journal)
        if offline:
            return

        from relay.desk_history import JournalHistory

        self.admin_token = secrets.token_urlsafe(32)
        setup_web(self)
        history = JournalHistory(self.journal)
        for name, ch in cfg.channels.items():
            employees = {
                e.address: EmployeeInfo(e.id, e.name, e.address, e.password_hash, self.router.is_active(e.id))
                for e in cfg.employees.values() if e.channel == name
            }
            self._channel_employees[name] = employees
            ctx = ChannelContext(
                name=name, side=ch.side, state=JournalState(self.journal, name), app=self.web,
                data_dir=str(cfg.data_dir), max_attachment_bytes=cfg.max_attachment_bytes,
                wake=lambda address, _n=name: self.outbox.wake(_n, address),
                employees=employees, public_url=cfg.public_url,
                extra={"relay": self, "trusted_proxies": (cfg.raw.get("web") or {}).get("trusted_proxies") or ()},
                reopened=lambda address, conversation, _n=name: self._reopened(_n, address, conversation),
                history=history if ch.side == "staff" else None,
            )
            self.channels[name] = load_factory(ch.network)(name, dict(ch.settings), ctx)
        leased = exclusive_names(self.channels) if getattr(self.journal, "shared", False) else []
        if leased:
            self.outbox.remote.update(leased)  # until this relay holds their leases
            self.journal.unowned_channels = self.outbox.remote  # type: ignore[attr-defined]
        resumed = await self.outbox.resume()
        if resumed:
            log.info("outbox: resumed %d pending deliveries", resumed)
        self.outbox.start_adopting(getattr(self.journal, "lease_seconds", 10.0) / 2)
        self.runner = web.AppRunner(self.web, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, cfg.host, cfg.port)
        await site.start()
        server = getattr(site, "_server", None)
        if server is not None and server.sockets:
            self.port = server.sockets[0].getsockname()[1]
        self._write_admin_files()
        for name, channel in self.channels.items():
            if name not in leased:
                await channel.start(self.hub.deliver_for(name))
                self._started_channels.append(channel)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(task(self)) for task in self.workflow.task_functions()]
        if getattr(self.journal, "shared", False):
            self._tasks.append(loop.create_task(self._follow_others(getattr(self.journal, "lease_seconds", 10.0) / 2)))
        if leased:
            self.leases = ChannelLeases(self.journal, leased, self._start_leased, self._stop_leased)
            await self.leases.step()
            self._tasks.append(loop.create_task(self.leases.run()))
        log.info("relay listening on %s", self.base_url)

    async def _follow_others(self, interval: float) -> None:
        """On a shared journal: pick up (de)activations made on another relay."""
        while True:
            await asyncio.sleep(interval)
            try:
                changed = await self.router.refresh()
            except Exception as exc:  # the database away: try again next round
                log.warning("could not re-read employee states: %s", type(exc).__name__)
                continue
            for employee in changed:
                if not self.router.is_active(employee):
                    await self.end_staff_sessions(employee)

    async def _start_leased(self, name: str) -> None:
        channel = self.channels[name]
        await channel.start(self.hub.deliver_for(name))
        self._started_channels.append(channel)
        self.outbox.remote.discard(name)
        await self.outbox.adopt(include_own=True)  # what was queued for it while it ran elsewhere

    async def _stop_leased(self, name: str) -> None:
        channel = self.channels[name]
        self.outbox.hand_back(name)
        if channel in self._started_channels:
            self._started_channels.remove(channel)
        try:
            await channel.stop()
        except Exception:
            log.exception("stopping channel %s", name)

    def _employee_changed(self, employee_id: str) -> None:
        """Keep the channels' view of who is active in step with (de)activations."""
        emp = self.config.employees.get(employee_id)
        if emp is None:
            return
        employees = self._channel_employees.get(emp.channel)
        if employees is not None and emp.address in employees:
            employees[emp.address] = replace(employees[emp.address], active=self.router.is_active(employee_id))

    async def end_staff_sessions(self, employee_id: str) -> int:
        """Close what a deactivated employee still has open on their staff channel (desk sockets);
        returns how many connections were closed (0 offline, or on a channel without live logins)."""
        emp = self.config.employees.get(employee_id)
        channel = self.channels.get(emp.channel) if emp is not None else None
        if emp is None or not isinstance(channel, StaffSessions):
            return 0
        return await channel.end_sessions(emp.address, f"employee {employee_id} deactivated: desk access withdrawn")

    async def conversation_handed_away(self, previous: str | None, conversation: str, to: str) -> int:
        """Withdraw a conversation just handed to `to` from what `previous` has open (desk tabs);
        returns how many connections were told (0 offline, or on a channel without live views)."""
        emp = self.config.employees.get(previous) if previous else None
        channel = self.channels.get(emp.channel) if emp is not None else None
        if emp is None or not isinstance(channel, LiveConversations):
            return 0
        new = self.config.employees.get(to)
        return await channel.handed_away(emp.address, conversation, new.name if new is not None else to)

    def _write_admin_files(self) -> None:
        d = self.config.data_dir
        for fname, value in (("admin.token", self.admin_token), ("admin.url", self.base_url)):
            path = d / fname
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(value)

    async def _on_policy_loaded(self, ps: PolicySet) -> None:
        log.info("policy set %s is active", ps.version[:12])
        await _policy_loaded(self.journal, ps, self.config.policies_dir,
                             warning=self.watcher.last_warning if self.watcher is not None else "")

    async def _on_shadow_loaded(self, ps: PolicySet) -> None:
        if self.config.shadow_policies_dir is not None:
            await _policy_loaded(self.journal, ps, self.config.shadow_policies_dir, shadow=True)

    async def _on_policy_error(self, errors: list[str]) -> None:
        await self.journal.append("admin.action", {"actor": "relay", "action": "policy.reload_failed",
                                                   "args": {"errors": errors}})

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for w in (self.watcher, self.shadow_watcher):
            if w is not None:
                await w.stop()
        for channel in reversed(self._started_channels):
            try:
                await channel.stop()
            except Exception:
                log.exception("stopping channel %s", channel.name)
        self._started_channels.clear()
        if getattr(self, "outbox", None) is not None:
            await self.outbox.stop()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        if getattr(self, "journal", None) is not None:
            await self.journal.close()
        for fname in ("admin.url", "admin.token"):
            if not self.offline:
                try:
                    (self.config.data_dir / fname).unlink()
                except FileNotFoundError:
                    pass
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
