"""bots.send_order: call order on the wire, and no overtaking after a failure."""

from __future__ import annotations

import asyncio

import pytest

from bots.base import Retryable
from bots.send_order import WINDOW, SendOrder, Window


async def test_turns_write_in_call_order_and_overlap_confirmations() -> None:
    order = SendOrder()
    wire: list[int] = []
    confirming = 0
    most = 0

    async def send(n: int, slow_write: bool) -> int:
        nonlocal confirming, most
        async with order.turn("lane") as turn:
            if slow_write:
                await asyncio.sleep(0.02)  # e.g. an upload before the write
            wire.append(n)
            turn.release()
            confirming += 1
            most = max(most, confirming)
            await asyncio.sleep(0.01)
            confirming -= 1
            return n

    results = await asyncio.gather(*(send(n, n == 0) for n in range(5)))
    assert wire == [0, 1, 2, 3, 4]
    assert results == [0, 1, 2, 3, 4]
    assert most > 1
    assert len(order) == 0


async def test_after_a_retryable_failure_the_rest_of_the_window_refuses_and_a_new_window_proceeds() -> None:
    order = SendOrder()
    wire: list[int] = []

    async def send(n: int, fail: bool = False) -> int:
        async with order.turn("lane") as turn:
            if fail:
                raise Retryable("connection lost")
            wire.append(n)
            turn.release()
            return n

    async def window(*sends: tuple[int, bool]) -> list[object]:
        token = WINDOW.set(Window())
        try:
            tasks = [asyncio.ensure_future(send(n, fail)) for n, fail in sends]
        finally:
            WINDOW.reset(token)
        return list(await asyncio.gather(*tasks, return_exceptions=True))

    outcomes = await window((0, False), (1, True), (2, False), (3, False))
    assert outcomes[0] == 0
    assert all(isinstance(o, Retryable) for o in outcomes[1:])
    assert wire == [0]
    assert await window((1, False), (2, False), (3, False)) == [1, 2, 3]
    assert wire == [0, 1, 2, 3]
    # outside a window nothing is fenced: a failure does not stop the next call
    with pytest.raises(Retryable):
        await send(4, True)
    assert await send(5) == 5
