"""Administrative writes (review decisions, handover, holds…) as named actions.

The running relay is the journal's only writer, so a CLI command that writes calls the
running process over its loopback admin API; when no relay runs, the command opens the
relay offline (journal, policies, hub; no channels) and runs the same function in-process.
Deliveries queued offline are sent when `relay run` next starts.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from relay.config import Config

if TYPE_CHECKING:
    from relay.app import RelayApp

Action = Callable[["RelayApp", dict[str, Any]], Awaitable[dict[str, Any]]]
ACTIONS: dict[str, Action] = {}


class AdminError(Exception):
    """The action was refused for a reason the user can fix (unknown id, wrong role…)."""


def admin_action(name: str) -> Callable[[Action], Action]:
    def register(fn: Action) -> Action:
        ACTIONS[name] = fn
        return fn
    return register


def _load_action_modules() -> None:
    """Import the modules that register actions (kept here so the CLI finds them all)."""
    import importlib

    for mod in ("relay.admin_actions", "relay.review", "relay.retention", "relay.handover"):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise


async def _call_running(config: Config, name: str, params: dict[str, Any]) -> dict[str, Any] | None:
    import aiohttp  # here, not at the top: read-only commands (`relay review list`) never call the relay

    url_file = Path(config.data_dir) / "admin.url"
    token_file = Path(config.data_dir) / "admin.token"
    if not url_file.exists() or not token_file.exists():
        return None
    url = url_file.read_text().strip()
    token = token_file.read_text().strip()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            async with session.post(f"{url}/admin/api/{name}", json=params,
                                    headers={"Authorization": f"Bearer {token}"}) as resp:
                data = await resp.json(content_type=None)
                if resp.status != 200:
                    raise AdminError(data.get("error", f"HTTP {resp.status}") if isinstance(data, dict) else str(data))
                return data
    except aiohttp.ClientConnectionError:
        return None


async def run_action_async(config: Config, name: str, params: dict[str, Any]) -> dict[str, Any]:
    from relay.app import AlreadyRunning, RelayApp

    _load_action_modules()
    if name not in ACTIONS:
        raise AdminError(f"unknown admin action {name!r}")
    result = await _call_running(config, name, params)
    if result is not None:
        return result
    try:
        relay = await RelayApp.start(config, offline=True)
    except AlreadyRunning as exc:
        raise AdminError(f"{exc}; its admin API did not answer (is it starting up?)") from exc
    try:
        return await ACTIONS[name](relay, params)
    finally:
        await relay.stop()


def run_action(config: Config, name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Synchronous entry for CLI handlers."""
    return asyncio.run(run_action_async(config, name, params))
