"""Durable delivery: every `delivery.queued` event is sent until it is delivered or fails for good.

Deliveries travel in lanes, one per (channel, recipient, conversation), so order holds per
conversation while a slow or offline recipient does not hold up the others. Retries back off
exponentially with jitter, capped, and honour a channel's `retry_after`; `wake(address)`
cuts a wait short when a recipient comes back. On start, every queued delivery not yet
journaled as delivered or permanently failed is resumed, in its original order.

A lane sends one message at a time, unless its channel declares `send_window` > 1: then up to
that many are in flight at once, their `send` calls started in order, marked as one window
(`bots.send_order.WINDOW`). Such a channel promises that it writes them to the network in call
order and that, once one of them fails with `Retryable`, the later ones of the window fail too
rather than overtake it; `bots.send_order.SendOrder` does both (bots/xmpp uses it: its
confirmation is a server round trip, which would otherwise cap a conversation at one message
per round trip).

Retries end: a delivery not sent `give_up_after` seconds after it was queued (the outbox's
default, or its channel's `give_up_after`) fails for good, and the sender is told. The journal
holds one event per outage, not one per attempt: the first failure (`permanent: false`), then
the outcome (`message.delivered`, or `delivery.failed` with `permanent: true`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping

from bots.base import Channel, Permanent, Retryable
from bots.send_order import WINDOW, Window
from relay.journal import Journal, lookups
from relay.model import Attachment, Outgoing, Party

log = logging.getLogger("relay.outbox")

LaneKey = tuple[str, str, str]
FailureHook = Callable[["Delivery", str], Awaitable[None]]
DeliveredHook = Callable[[dict[str, Any], int, "str | None"], Awaitable[list[tuple[str, dict[str, Any], "str | None"]]]]
"""(message.delivered body, its seq, conversation) → events to journal after it (early receipts linked)."""


@dataclass
class Delivery:
    delivery_id: str
    message_id: str
    conversation: str
    channel: str
    to: Party
    out: dict[str, Any]
    attempts: int = 0
    queued_at: float = field(default_factory=time.monotonic)
    queued_ts: float = field(default_factory=time.time)
    """Wall-clock time of its `delivery.queued` event (kept across restarts): retries end from it."""
    failing: bool = False
    """A failure of the current outage is journaled; later failures of it are not."""

    @property
    def lane(self) -> LaneKey:
        return (self.channel, self.to.user, self.conversation)


def party_json(p: Party | None) -> dict[str, str] | None:
    return None if p is None else {"channel": p.channel, "user": p.user, "display": p.display}


def party_of(d: Mapping[str, Any] | None) -> Party | None:
    return None if not d else Party(d.get("channel", ""), str(d.get("user", "")), d.get("display", ""))


@dataclass(frozen=True)
class _Started:
    """An attempt ready to send: the journal fields and the channel's `send` not yet awaited."""

    base: dict[str, Any]
    send: Awaitable[str]


async def _raise(exc: BaseException) -> str:
    raise exc


class _Lane:
    def __init__(self) -> None:
        self.items: deque[Delivery] = deque()
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.batch: list[Delivery] = []
        """The deliveries of the attempt in progress (a window, or one)."""
        self.released: set[str] = set()
        """Delivery ids of `batch` whose send already failed: they may be withdrawn."""


class Outbox:
    """Sends queued deliveries through their channels and journals every outcome."""

    def __init__(
        self,
        journal: Journal,
        channels: Mapping[str, Channel],
        base_delay: float = 0.5,
        max_delay: float = 60.0,
        on_permanent: FailureHook | None = None,
        give_up_after: float = 86400.0,
        channel_give_up: Mapping[str, float] | None = None,
    ) -> None:
        self.journal = journal
        self.channels = channels
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.give_up_after = give_up_after
        self.channel_give_up = dict(channel_give_up or {})
        self.on_permanent = on_permanent
        self.on_delivered: DeliveredHook | None = None
        self._lanes: dict[LaneKey, _Lane] = {}
        self._stopping = False
        self._platform_ids: dict[tuple[str, str], str] = {}
        self._commits: set[asyncio.Task[Any]] = set()
        self._adopter: asyncio.Task[None] | None = None
        self._adopting = 0
        self.remote: set[str] = set()
        """Channels another relay sends on (shared journal, connection-held channel whose lease
        it holds): their deliveries are handed back in the journal for that relay to claim."""
        self.delivered = 0
        self.failed = 0
        self.retries = 0

    @property
    def pending(self) -> int:
        return sum(len(lane.items) for lane in self._lanes.values())

    async def resume(self) -> int:
        """Re-queue every delivery the journal has not seen finish; returns how many. On a journal
        several relays share, only those this relay claims (its own, and ones nobody alive holds)."""
        claim = getattr(self.journal, "claim_deliveries", None)
        if claim is not None:
            rows = await claim(True, self.remote)
        else:
            rows = await self.journal.fetchall(lookups.QUEUED_DELIVERIES)
        self._enqueue_rows(rows)
        return len(rows)

    async def adopt(self, include_own: bool = False) -> int:
        """On a shared journal: take over the queued deliveries of relays that stopped (their
        lease ran out); returns how many. A delivery a dead relay had just sent but not yet
        journaled as delivered is sent once more (as after a restart). `include_own`: also this
        relay's own ones not in a lane here (those of a channel it has just taken over)."""
        claim = getattr(self.journal, "claim_deliveries", None)
        if claim is None:
            return 0
        self._adopting += 1  # lanes hold still until what is claimed is in them, in order
        try:
            rows = await claim(include_own, self.remote)
            known = {d.delivery_id for lane in self._lanes.values() for d in lane.items}
            rows = [r for r in rows if r["delivery_id"] not in known]
            self._enqueue_rows(rows)
            await self._reorder([d.lane for d in self._from_rows(rows)])
        finally:
            self._adopting -= 1
        if rows:
            log.info("outbox: took over %d deliveries of a stopped relay", len(rows))
        return len(rows)

    def _hand_back(self, delivery_ids: list[str]) -> None:
        task = asyncio.create_task(self.journal.release_deliveries(delivery_ids))
        self._commits.add(task)
        task.add_done_callback(self._commits.discard)

    def hand_back(self, channel: str) -> int:
        """This relay stopped sending on `channel`: its waiting deliveries there go back to the
        journal for the relay that now holds the channel. Returns how many."""
        self.remote.add(channel)
        taken: list[Delivery] = []
        for (ch, user, _conv) in list(self._lanes):
            if ch == channel:
                taken += self.withdraw(ch, user)
        if taken:
            self._hand_back([d.delivery_id for d in taken])
        return len(taken)

    def start_adopting(self, interval: float) -> None:
        """Calls `adopt` every `interval` seconds until `stop`, when the journal is shared."""
        if getattr(self.journal, "shared", False) and self._adopter is None:
            self._adopter = asyncio.create_task(self._adopt_loop(interval), name="outbox:adopt")

    async def _adopt_loop(self, interval: float) -> None:
        while not self._stopping:
            await asyncio.sleep(interval)
            try:
                await self.adopt()
            except Exception:  # the database away: the journal retries; try again next round
                log.exception("outbox: could not take over deliveries")

    async def _reorder(self, lanes: list[LaneKey]) -> None:
        """Deliveries taken over join lanes where this relay's own later ones wait (held back by
        `_held_elsewhere`): put each such lane's waiting items back in journal order."""
        seqs_of = getattr(self.journal, "delivery_seqs", None)
        for key in dict.fromkeys(lanes):
            lane = self._lanes.get(key)
            if seqs_of is None or lane is None or len(lane.items) < 2:
                continue
            seqs = await seqs_of([d.delivery_id for d in lane.items])
            busy = [d for d in lane.items if any(d is b for b in lane.batch)]
            waiting = [d for d in lane.items if not any(d is b for b in lane.batch)]
            waiting.sort(key=lambda d: seqs.get(d.delivery_id, 1 << 62))
            lane.items.clear()
            lane.items.extend(busy + waiting)

    def _from_rows(self, rows: Any) -> list[Delivery]:
        return [Delivery(r["delivery_id"], r["message_id"], r["conversation"] or "", r["channel"],
                         party_of(json.loads(r["to_json"])) or Party(r["channel"], ""), {}) for r in rows]

    def _enqueue_rows(self, rows: Any) -> None:
        for r in rows:
            to = party_of(json.loads(r["to_json"])) or Party(r["channel"], "")
            attempts = int(r["attempts"] or 0)
            self.enqueue(
                Delivery(r["delivery_id"], r["message_id"], r["conversation"] or "", r["channel"], to,
                         json.loads(r["out_json"]), attempts=attempts, queued_ts=float(r["queued_ts"]),
                         failing=attempts > 0)
            )

    def enqueue(self, d: Delivery) -> None:
        """Add a delivery whose `delivery.queued` event is already committed."""
        if d.channel in self.remote:
            self._hand_back([d.delivery_id])
            return
        lane = self._lanes.get(d.lane)
        if lane is None:
            lane = self._lanes[d.lane] = _Lane()
        lane.items.append(d)
        if not self._stopping and (lane.task is None or lane.task.done()):
            lane.task = asyncio.create_task(self._run(d.lane, lane), name=f"outbox:{d.lane}")

    def withdraw(self, channel: str, address: str, conversation: str | None = None) -> list[Delivery]:
        """Take back the deliveries still waiting for `address` on `channel` (not those being sent
        right now; one whose send just failed counts as waiting), e.g. to reroute them when an
        employee is deactivated; the caller journals that."""
        taken: list[Delivery] = []
        for (ch, user, conv), lane in self._lanes.items():
            if ch != channel or user != address or (conversation is not None and conv != conversation):
                continue
            busy = {id(d) for d in lane.batch if d.delivery_id not in lane.released}
            keep = [d for d in lane.items if id(d) in busy]
            taken.extend(d for d in lane.items if id(d) not in busy)
            lane.items.clear()
            lane.items.extend(keep)
            lane.wake.set()
        return taken

    def wake(self, channel: str, address: str | None = None) -> None:
        """Retry now every waiting lane to `address` on `channel` (all of them when None)."""
        for (ch, user, _), lane in self._lanes.items():
            if ch == channel and (address is None or user == address):
                lane.wake.set()

    async def stop(self) -> None:
        self._stopping = True
        if self._adopter is not None:
            self._adopter.cancel()
            await asyncio.gather(self._adopter, return_exceptions=True)
        tasks = [lane.task for lane in self._lanes.values() if lane.task and not lane.task.done()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*self._commits, return_exceptions=True)

    async def drain(self, timeout: float = 10.0) -> bool:
        """Wait until nothing is pending (tests and shutdown); False on timeout."""
        deadline = time.monotonic() + timeout
        while self.pending and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return not self.pending

    def _delay(self, attempts: int, after: float | None) -> float:
        backoff = min(self.max_delay, self.base_delay * (2 ** max(0, attempts - 1)))
        backoff = backoff * (0.5 + random.random() / 2)
        return max(backoff, after or 0.0)

    async def _run(self, key: LaneKey, lane: _Lane) -> None:
        while lane.items and not self._stopping:
            window = self._window(key[0])
            # the window's last: nothing queued elsewhere before it means nothing before any of it
            held = await self._held_elsewhere(lane.items[min(window, len(lane.items)) - 1])
            if held:
                lane.wake.clear()
                try:
                    await asyncio.wait_for(lane.wake.wait(), timeout=held)
                except asyncio.TimeoutError:
                    pass
                continue
            batch = [lane.items[i] for i in range(min(window, len(lane.items)))]
            lane.batch, lane.released = batch, set()
            try:
                outcomes = await self._attempt_many(batch) if len(batch) > 1 else [await self._attempt(batch[0])]
            except asyncio.CancelledError:
                raise
            except Exception:  # a journal failure: keep the deliveries, try again later
                log.exception("outbox: could not journal the outcome of %s", batch[0].delivery_id)
                outcomes = [self.max_delay] * len(batch)
            finally:
                lane.batch, lane.released = [], set()
            for d, outcome in zip(batch, outcomes):
                if outcome is None and any(x is d for x in lane.items):
                    lane.items.remove(d)
            waits = [outcome for outcome in outcomes if outcome is not None]
            if not waits:
                continue
            lane.wake.clear()
            try:
                await asyncio.wait_for(lane.wake.wait(), timeout=waits[0])
            except asyncio.TimeoutError:
                pass
        if not lane.items:
            self._lanes.pop(key, None)

    async def _held_elsewhere(self, d: Delivery) -> float | None:
        """On a shared journal: seconds to wait while an earlier delivery of the same lane is
        queued by another relay (alive, or dead and not yet taken over), so order holds per
        conversation; None to send now (or when the journal cannot say)."""
        earlier = getattr(self.journal, "earlier_queued_elsewhere", None)
        if earlier is None:
            return None
        try:
            blocked = await earlier(d.delivery_id)
        except Exception:  # the database away: the send's own journaling retries it
            log.warning("outbox: could not check the order of %s", d.delivery_id)
            return None
        if self._adopting:  # an earlier one may just have been claimed but not yet be in the lane
            return 0.05
        return min(self.max_delay, 0.25) if blocked else None

    def _window(self, channel_name: str) -> int:
        channel = self.channels.get(channel_name)
        window = getattr(channel, "send_window", 1) if channel is not None else 1
        return window if isinstance(window, int) and window > 1 else 1

    async def _load_attachments(self, items: list[dict[str, Any]]) -> tuple[Attachment, ...]:
        out = []
        for a in items:
            data = await self.journal.get_blob(a["sha256"]) if a.get("sha256") else None
            out.append(Attachment(a.get("name", ""), a.get("mime", "application/octet-stream"), int(a.get("size", 0)),
                                  a.get("sha256", ""), a.get("platform_ref", ""), a.get("refused", ""), data or b""))
        return tuple(out)

    async def _platform_id_of(self, message_id: str | None, channel: str) -> str | None:
        if not message_id:
            return None
        known = self._platform_ids.get((message_id, channel))
        if known is not None:
            return known
        own = await self.journal.fetchall(  # a notice answering a sender's own message
            "SELECT platform_id FROM messages WHERE id = ? AND channel = ?", (message_id, channel))
        if own and own[0]["platform_id"]:
            return own[0]["platform_id"]
        rows = await self.journal.fetchall(lookups.DELIVERED_PLATFORM_ID, (message_id, channel))
        return rows[0]["platform_id"] if rows else None

    async def build(self, d: Delivery) -> Outgoing:
        o = d.out
        kind = o.get("kind", "message")
        edits = await self._platform_id_of(o.get("edits"), d.channel) if o.get("edits") else None
        if kind in ("edit", "delete") and edits is None:
            kind = "message" if kind == "edit" else "notice"
        return Outgoing(
            conversation=d.conversation,
            to=d.to,
            text=o.get("text", ""),
            message_id=d.message_id,
            kind=kind,
            attachments=await self._load_attachments(o.get("attachments") or []),
            reply_to=await self._platform_id_of(o.get("reply_to"), d.channel),
            edits=edits,
            origin=party_of(o.get("origin")),
            client=party_of(o.get("client")),
            action=o.get("action", "allow"),
            rules=tuple(o.get("rules") or ()),
            about=str(o.get("about") or ""),
            handed_from=party_of(o.get("handed_from")),
        )

    async def _attempt(self, d: Delivery) -> float | None:
        """One send; None when the delivery is finished, else seconds to wait."""
        started = await self._start(d)
        if not isinstance(started, _Started):
            return started
        return await self._outcome(d, started.base, started.send)

    async def _attempt_many(self, batch: list[Delivery]) -> list[float | None]:
        """A window of sends: built and started in order, each outcome journaled in order."""
        pending: list[float | None | asyncio.Future[float | None]] = []
        window = WINDOW.set(Window())  # the send tasks inherit it (bots.send_order)
        try:
            for d in batch:
                started = await self._start(d)
                if isinstance(started, _Started):
                    pending.append(asyncio.ensure_future(self._outcome(d, started.base, started.send)))
                else:
                    pending.append(started)
        except BaseException:  # the sends already started still finish and journal their outcome
            await asyncio.gather(*(p for p in pending if isinstance(p, asyncio.Future)), return_exceptions=True)
            raise
        finally:
            WINDOW.reset(window)
        try:
            return [await p if isinstance(p, asyncio.Future) else p for p in pending]
        except asyncio.CancelledError:  # the outbox is stopping: the window's sends stop with it
            for p in pending:
                if isinstance(p, asyncio.Future):
                    p.cancel()
            raise

    async def _start(self, d: Delivery) -> _Started | float | None:
        """Build the Outgoing for an attempt (the send itself not yet running), or its outcome
        when there is nothing to send."""
        channel = self.channels.get(d.channel)
        d.attempts += 1
        base = {"delivery_id": d.delivery_id, "message_id": d.message_id, "channel": d.channel, "attempt": d.attempts}
        if channel is None:
            return await self._retry_later(d, base, f"channel {d.channel!r} is not configured or not running", None)
        if d.out.get("kind") == "delete" and not d.out.get("edits"):
            await self.journal.append("delivery.failed", {**base, "reason": "nothing to delete", "permanent": True},
                                      conversation=d.conversation)
            return None
        try:
            out = await self.build(d)
        except Exception as exc:  # noqa: BLE001 (reported through the same path as a failed send)
            return _Started(base, _raise(exc))
        return _Started(base, channel.send(out))

    async def _outcome(self, d: Delivery, base: dict[str, Any], send: Awaitable[str]) -> float | None:
        try:
            platform_id = await send
        except Retryable as exc:
            return await self._retry_later(d, base, exc.reason, exc.after)
        except Permanent as exc:
            await self._fail(d, base, exc.reason)
            return None
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an adapter bug must not stall the lane forever or vanish
            log.exception("outbox: %s raised while sending %s", d.channel, d.delivery_id)
            if d.attempts >= 5:
                await self._fail(d, base, f"adapter error: {exc!r}")
                return None
            return await self._retry_later(d, base, f"adapter error: {exc!r}", None)
        # The lane moves on while `message.delivered` commits (it was sent; a crash before the
        # commit means one re-send after restart, never a loss); commits keep submission order.
        if d.out.get("kind") != "notice":  # a notice about a message is not where that message is
            self._platform_ids[(d.message_id, d.channel)] = str(platform_id)
        if len(self._platform_ids) > 100_000:
            self._platform_ids.pop(next(iter(self._platform_ids)))
        task = asyncio.create_task(self._journal_delivered(d, {**base, "platform_id": str(platform_id)}))
        self._commits.add(task)
        task.add_done_callback(self._commits.discard)
        self.delivered += 1
        return None

    def give_up_seconds(self, channel: str) -> float:
        return self.channel_give_up.get(channel, self.give_up_after)

    async def _retry_later(self, d: Delivery, base: dict[str, Any], reason: str, after: float | None) -> float | None:
        """A failed attempt: seconds until the next one, or None once the delivery was given up.

        Only an outage's first failure is journaled; the next is journaled only as the outcome.
        """
        limit = self.give_up_seconds(d.channel)
        left = d.queued_ts + limit - time.time()
        if left <= 0:
            await self._fail(d, base, f"gave up after {_duration(limit)} of retries: {reason}")
            return None
        self.retries += 1
        self._release(d)
        if not d.failing:
            body = {**base, "reason": reason, "permanent": False, "give_up_at": round(d.queued_ts + limit, 3)}
            if after is not None:
                body["retry_after"] = after
            await self.journal.append("delivery.failed", body, conversation=d.conversation)
            d.failing = True
        return min(self._delay(d.attempts, after), left)

    def _release(self, d: Delivery) -> None:
        """`d`'s send failed and it waits for a retry: `withdraw` may take it meanwhile."""
        lane = self._lanes.get(d.lane)
        if lane is not None:
            lane.released.add(d.delivery_id)

    async def _journal_delivered(self, d: Delivery, body: dict[str, Any]) -> None:
        for attempt in range(5):
            try:
                ev = await self.journal.append("message.delivered", body, conversation=d.conversation)
                break
            except Exception:
                log.exception("outbox: journaling delivery %s failed (attempt %d)", d.delivery_id, attempt + 1)
                await asyncio.sleep(0.2 * (attempt + 1))
        else:
            return
        if self.on_delivered is None:
            return
        try:  # receipts that arrived before this event, parked unlinked in the journal, linked now
            early = await self.on_delivered(body, ev.seq, d.conversation)
            if early:
                await self.journal.append_many(early)
        except Exception:
            log.exception("outbox: linking early receipts of delivery %s failed", d.delivery_id)

    async def _fail(self, d: Delivery, base: dict[str, Any], reason: str) -> None:
        self.failed += 1
        await self.journal.append("delivery.failed", {**base, "reason": reason, "permanent": True},
                                  conversation=d.conversation)
        if self.on_permanent is not None:
            try:
                await self.on_permanent(d, reason)
            except Exception:
                log.exception("outbox: failure hook raised for %s", d.delivery_id)


def _duration(seconds: float) -> str:
    """`90 s`, `15 min`, `24 h`, `7 d`: how long retries went on, for the failure reason."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)} {unit}"
    return f"{seconds:g} s"
