"""`relay run`: start the relay and serve until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import signal

from relay import logs
from relay.cli import CommandError
from relay.commands.common import add_config_arg, config_of


def setup(p: argparse.ArgumentParser) -> None:
    add_config_arg(p)
    p.set_defaults(handler=handle)


async def _serve(args: argparse.Namespace) -> None:
    from relay.app import AlreadyRunning, RelayApp
    from relay.config import ConfigError

    config = config_of(args)
    logs.configure(config.log_level)
    try:
        relay = await RelayApp.start(config)
    except (ConfigError, AlreadyRunning) as exc:
        raise CommandError(str(exc), 2) from exc
    except OSError as exc:
        raise CommandError(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}", 2) from exc
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    base = relay.base_url
    print(f"relay is running on {base}", flush=True)
    if "webchat" in {c.network for c in config.channels.values()}:
        print(f"  client web chat: {base}/chat", flush=True)
    if "webdesk" in {c.network for c in config.channels.values()}:
        print(f"  employee desk:   {base}/desk", flush=True)
    print(f"  journal:         {config.data_dir}", flush=True)
    print(f"  policies:        {config.policies_dir} (version {relay.policies.version[:12]})", flush=True)
    try:
        await stop.wait()
    finally:
        await relay.stop()


def handle(args: argparse.Namespace) -> int:
    asyncio.run(_serve(args))
    return 0
