"""Administrative writes (review decisions, handover, holds…) as named actions.

The running relay is the journal's only writer, so a CLI command that writes calls the
running process over its loopback admin API; when no relay runs, the command opens the
relay offline (journal, policies, hub; no channels) and runs the same function in-process.
Deliveries queued offline are sent when `relay run` next starts.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from relay.actions import AdminError, Workflow
from relay.config import Config


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


async def run_action_async(config: Config, name: str, params: dict[str, Any],
                           workflow: Workflow | None = None) -> dict[str, Any]:
    """Run action `name` of `workflow` (the compliance workflow's when not given)."""
    from relay.app import AlreadyRunning, RelayApp, default_workflow

    workflow = workflow if workflow is not None else default_workflow()
    if name not in workflow.actions:
        raise AdminError(f"unknown admin action {name!r}")
    result = await _call_running(config, name, params)
    if result is not None:
        return result
    try:
        relay = await RelayApp.start(config, offline=True, workflow=workflow)
    except AlreadyRunning as exc:
        raise AdminError(f"{exc}; its admin API did not answer (is it starting up?)") from exc
    try:
        return await workflow.actions[name](relay, params)
    finally:
        await relay.stop()


def run_action(config: Config, name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Synchronous entry for CLI handlers."""
    return asyncio.run(run_action_async(config, name, params))


__all__ = ["AdminError", "run_action", "run_action_async"]
