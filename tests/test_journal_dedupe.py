"""`append_many(..., unless_message=id)`: the writer refuses a second entry for a message id."""

from __future__ import annotations

import asyncio
from tests.journal_support import Store, store  # noqa: F401  (store is a fixture)


def received(mid: str) -> tuple[str, dict, str]:
    return ("message.received", {"id": mid, "direction": "inbound", "channel": "c", "platform_id": mid,
                                 "chat": "x", "kind": "message", "text": "t"}, "conv")


async def test_same_message_in_one_batch_and_across_batches_is_written_once(store: Store) -> None:
    j = await store.open_raw()
    try:
        results = await asyncio.gather(*(j.append_many([received("m-1")], unless_message="m-1") for _ in range(5)))
        assert sum(r is not None for r in results) == 1
        assert await j.append_many([received("m-1")], unless_message="m-1") is None
        assert await j.append_many([received("m-2")], unless_message="m-2") is not None
        rows = await j.fetchall("SELECT COUNT(*) AS n FROM events")
        assert rows[0]["n"] == 2
        assert (await j.verify()).ok
    finally:
        await j.close()
