"""End to end: a client on Signal (fake signal-cli) ↔ an employee in Slack (fake Slack), through
a running relay with the real journal and the shipped policies: edits and deletes both ways,
files, receipts, and a signal-cli restart in the middle."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, AsyncIterator, Callable, TypeVar

import pytest

from relay.app import RelayApp
from tests.e2e_support import running, web_config
from tests.fake_signal import FakeSignalCli
from tests.fake_slack import FakeSlack

T = TypeVar("T")
RECORDING = "This conversation is recorded for regulatory purposes."
CLIENT = "+4915112345000"
ALICE = "U0ALICE"


async def until(probe: Callable[[], T | None], what: str, timeout: float = 10.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeSignalCli, FakeSlack]]:
    cli, slack = FakeSignalCli(), FakeSlack()
    await cli.start()
    await slack.start()
    yield cli, slack
    await slack.stop()
    await cli.stop()


def config(tmp_path: Path, cli: FakeSignalCli, slack: FakeSlack) -> dict[str, Any]:
    cfg = web_config(tmp_path / "data")
    cfg["channels"]["signal"] = {"network": "signal", "side": "client", "account": cli.account, "port": cli.port,
                                 "timeout": 3, "max_backoff": 0.2}
    cfg["channels"]["slack"] = {"network": "slack", "side": "staff", "bot_token": slack.token,
                                "signing_secret": slack.signing_secret, "channel": slack.channel,
                                "api_url": slack.url + "/api/", "timeout": 5}
    cfg["employees"]["alice"]["staff"] = {"channel": "slack", "address": ALICE}
    cfg["desks"] = {"advisors": {"clients": ["signal"], "members": ["alice"]},
                    "web": {"clients": ["webchat"], "members": ["bob"]}}
    return cfg


async def rows(relay: RelayApp, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    return list(await relay.journal.fetchall(sql, params))


async def test_signal_client_and_slack_employee_edits_deletes_files_receipts_and_restart(
        tmp_path: Path, fakes: tuple[FakeSignalCli, FakeSlack]) -> None:
    cli, slack = fakes
    async with running(config(tmp_path, cli, slack)) as relay:
        events = f"{relay.base_url}/slack/slack/events"
        await until(lambda: cli.subscriptions >= 1, "the relay subscribing to signal-cli")
        first = cli.text(CLIENT, "Hallo, my card is 4111 1111 1111 1111")
        await cli.push(first)
        root, post = await until(lambda: slack.posts[:2] if len(slack.posts) >= 2 else None, "the thread")
        assert post["thread_ts"] == root["ts"] and "4111" not in post["text"] and "[REDACTED]" in post["text"]
        thread = root["ts"]

        await cli.push(cli.edit(CLIENT, first["timestamp"], "my card is 4111 1111 1111 1111, sorry"))
        (update,) = await until(lambda: slack.updates or None, "the edit on Slack")
        assert update["ts"] == post["ts"] and "sorry" in update["text"] and "4111" not in update["text"]

        reply = slack.message(ALICE, "Please never send card numbers here.", thread)
        assert (await slack.post_event(events, slack.envelope(reply)))[0] == 200
        (sent,) = await until(lambda: cli.sent or None, "the reply on Signal")
        assert sent["recipient"] == [CLIENT] and sent["message"].startswith(RECORDING)

        await cli.push(cli.receipt(CLIENT, [sent["_timestamp"]]))

        async def receipts() -> list[Any]:
            return await rows(relay, "SELECT json_extract(body_json, '$.status') AS s FROM events WHERE kind = 'delivery.receipt'")

        deadline = time.monotonic() + 10
        while not await receipts() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert [r["s"] for r in await receipts()] == ["receipt"]

        assert (await slack.post_event(events, slack.envelope(slack.edited(reply, "Please never send card data."))))[0] == 200
        edit = (await until(lambda: cli.sent[1:] or None, "the employee's edit on Signal"))[0]
        assert edit["editTimestamp"] == sent["_timestamp"] and edit["message"].endswith("Please never send card data.")
        assert (await slack.post_event(events, slack.envelope(slack.deleted(reply))))[0] == 200
        (gone,) = await until(lambda: cli.deleted or None, "the employee's delete on Signal")
        assert gone["targetTimestamp"] == sent["_timestamp"]

        await cli.restart(down_for=0.3)
        photo = cli.add_attachment(b"\x89PNG" + b"s" * 200, "image/png", "karte.png")
        await cli.push(cli.text(CLIENT, "hier das Foto", attachments=[photo]))
        (shared,) = await until(lambda: slack.shared or None, "the photo after the restart")
        assert shared["data"] == b"\x89PNG" + b"s" * 200 and shared["thread_ts"] == thread
        await cli.push(cli.remote_delete(CLIENT, first["timestamp"]))
        (deleted,) = await until(lambda: slack.deletes or None, "the client's delete on Slack")
        assert deleted["ts"] == post["ts"]
        kept = await rows(relay, "SELECT text FROM messages WHERE channel = 'signal' AND platform_id = ?",
                          (f"{CLIENT}:{first['timestamp']}",))
        assert kept and "4111 1111 1111 1111" in kept[0]["text"]
