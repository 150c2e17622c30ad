"""The compliance console in real headless Chromium, driven as reviewers would drive it: one
browser and one relay for the whole module (each reviewer in their own browser context)."""

from __future__ import annotations

import json
import os
from typing import Any, AsyncIterator

import pytest
import pytest_asyncio

from relay.app import RelayApp
from tests.console_support import PASSWORDS, client_says, console_config
from tests.webchat_cdp_support import CHROMIUM, Browser, Page, chromium

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def relay(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RelayApp]:
    root = tmp_path_factory.mktemp("console")
    app = await RelayApp.start(console_config(root / "data"))
    try:
        yield app
    finally:
        await app.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    assert os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is missing; .ci/run installs it"
    async with chromium() as b:
        yield b


async def log_in(browser: Browser, relay: RelayApp, who: str) -> Page:
    page = await browser.new_page()
    await page.goto(relay.base_url + "/console/login")
    await page.type_into("reviewer", who)
    await page.type_into("password", PASSWORDS[who])
    await page.click("login-submit")
    await page.wait_for("document.getElementById('queue-rows')")
    return page


async def key(page: Page, k: str) -> None:
    """One key press as the keyboard sends it (Enter, or a letter)."""
    if k == "Enter":
        down = {"key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13, "text": "\r"}
    else:
        down = {"key": k, "code": f"Key{k.upper()}", "windowsVirtualKeyCode": ord(k.upper()), "text": k}
    await page.call("Input.dispatchKeyEvent", {"type": "keyDown", **down})
    await page.call("Input.dispatchKeyEvent", {"type": "keyUp", **{x: y for x, y in down.items() if x != "text"}})


async def submit(page: Page, element_id: str, then: str) -> None:
    """Press a submit button as a keyboard user would (focus + Enter) and wait for the next page."""
    await page.evaluate(f"window.__before = true; document.getElementById({json.dumps(element_id)}).focus()")
    await key(page, "Enter")
    await page.wait_for(f"!window.__before && document.readyState === 'complete' && ({then})")


async def select(page: Page, element_id: str, value: str) -> None:
    await page.evaluate(f"document.getElementById({json.dumps(element_id)}).value = {json.dumps(value)}")


async def decisions(relay: RelayApp) -> list[dict[str, Any]]:
    rows = await relay.journal.fetchall("SELECT body_json FROM events WHERE kind = 'review.decided' ORDER BY seq")
    return [json.loads(r["body_json"]) for r in rows]


async def test_a_reviewer_works_the_queue(relay: RelayApp, browser: Browser) -> None:
    flagged = [await client_says(relay, f"c{i}", f"a guaranteed profit, offer {i}") for i in range(3)]
    held = await client_says(relay, "vera", "an insider told me to buy now")
    page = await log_in(browser, relay, "carol")
    assert await page.evaluate("document.querySelectorAll('#queue-rows tr[data-message-id]').length") == 4

    # filter by rule with the filter form
    await page.type_into("f-rule", "Q-001")
    await submit(page, "f-apply", "location.search.includes('rule=Q-001')")
    ids = await page.evaluate("[...document.querySelectorAll('#queue-rows tr')].map(r => r.dataset.messageId)")
    assert ids == [held]
    assert "SLA due" in await page.evaluate("document.querySelector('table.queue thead').textContent")

    # open the item, see the matched span and the rule's title, decide it
    await page.evaluate("document.querySelector('a.open-item').focus()")
    await key(page, "Enter")
    await page.wait_for("document.getElementById('decide')")
    assert await page.evaluate("document.querySelector('#message-text mark').textContent") == "insider"
    assert "Inside information" in await page.evaluate("document.querySelector('table.rules').textContent")
    assert "Not delivered to anyone (held for review)" in await page.evaluate("document.getElementById('deliveries').textContent")
    await select(page, "decision", "reject")
    await page.type_into("reason", "insider tip: not to be sent")
    await submit(page, "decide-submit", "document.querySelector('.notice')")
    assert "closed (reject by carol)" in await page.evaluate("document.getElementById('item-state').textContent")
    assert (await decisions(relay))[-1] == {"message_id": held, "decision": "reject", "reviewer": "carol",
                                            "reason": "insider tip: not to be sent"}

    # a forged CSRF token is refused, and nothing is journaled
    before = len(await decisions(relay))
    status = await page.evaluate(
        f"fetch('/console/item/{flagged[0]}/decide', {{method: 'POST', headers: {{'Content-Type':"
        " 'application/x-www-form-urlencoded'}, body: 'decision=compliant&csrf=forged'}).then(r => r.status)")
    assert status == 403 and len(await decisions(relay)) == before

    # bulk: select two rows with the keyboard (j moves, x selects), one reason for both
    await page.goto(relay.base_url + "/console/queue?rule=F-001&sort=oldest")
    await key(page, "j")
    await key(page, "x")
    await key(page, "j")
    await key(page, "x")
    checked = await page.evaluate("[...document.querySelectorAll('#queue-rows input:checked')].map(b => b.value)")
    assert checked == flagged[:2]
    await select(page, "bulk-decision", "false-positive")
    await page.type_into("bulk-reason", "marketing template, reviewed")
    await submit(page, "bulk-submit", "document.getElementById('bulk-result')")
    assert "2 of 2 item(s) decided" in await page.evaluate("document.getElementById('bulk-result').textContent")
    bulk = [d for d in await decisions(relay) if d["decision"] == "false-positive"]
    assert [d["message_id"] for d in bulk] == flagged[:2] and {d["reviewer"] for d in bulk} == {"carol"}

    # search, then open the conversation from a result
    await page.goto(relay.base_url + "/console/search")
    await page.type_into("s-q", "offer 2")
    await submit(page, "s-submit", "document.getElementById('search-count')")
    assert "1 result(s)" in await page.evaluate("document.getElementById('search-count').textContent")
    await page.evaluate("document.querySelector('a.hit-link').click()")
    await page.wait_for("document.querySelector('.transcript')")
    timeline = await page.evaluate("document.querySelector('.transcript').textContent")
    assert "offer 2" in timeline and "F-001" in timeline and "conversation assigned to" in timeline

    # the queue gets a new item live, without a reload
    await page.goto(relay.base_url + "/console/queue")
    await page.wait_for("document.getElementById('live-note')")
    await page.evaluate("window.__same_page = true")
    await page.evaluate("new Promise(r => setTimeout(r, 300))")
    fresh = await client_says(relay, "late", "guaranteed returns, just arrived")
    await page.wait_for(f"document.querySelector('#queue-rows tr[data-message-id=\"{fresh}\"]')")
    assert await page.evaluate("window.__same_page === true")
    assert "1 new item(s) arrived live" in await page.evaluate("document.getElementById('live-note').textContent")


async def test_export_is_started_followed_downloaded_and_verified(relay: RelayApp, browser: Browser) -> None:
    await client_says(relay, "exp", "guaranteed growth for the export")
    page = await log_in(browser, relay, "carol")
    await page.goto(relay.base_url + "/console/exports")
    await page.type_into("x-client", "clients:exp")
    await submit(page, "export-start", "document.getElementById('export-progress')")
    await page.wait_for("document.getElementById('export-state')?.textContent === 'done'", timeout=60)
    assert (await page.evaluate("document.getElementById('verify-result').textContent")).startswith("ok:")
    assert "1 messages in 1 conversations" in await page.evaluate("document.getElementById('export-summary').textContent")
    size, magic = await page.evaluate(
        "fetch(document.getElementById('download').href).then(r => r.arrayBuffer()).then(b =>"
        " [b.byteLength, String.fromCharCode(...new Uint8Array(b.slice(0, 2)))])")
    assert magic == "PK" and size > 500
    rows = await relay.journal.fetchall("SELECT body_json FROM events WHERE kind = 'admin.action'"
                                        " AND body_json LIKE '%journal.export%'")
    body = json.loads(rows[-1]["body_json"])
    assert body["actor"] == "carol" and body["args"]["client"] == "clients:exp" and body["args"]["via"] == "console"


async def test_roles_and_sessions(relay: RelayApp, browser: Browser) -> None:
    anon = await browser.new_page()
    await anon.goto(relay.base_url + "/console/login")
    assert await anon.evaluate("fetch('/console/queue').then(r => r.status)") == 401
    assert await anon.evaluate("fetch('/console/holds/add', {method: 'POST'}).then(r => r.status)") == 401

    carol = await log_in(browser, relay, "carol")
    await carol.goto(relay.base_url + "/console/holds")
    assert "carol has role reviewer; this needs a supervisor or admin" in await carol.evaluate(
        "document.getElementById('error').textContent")
    csrf = await carol.evaluate("document.querySelector('meta[name=csrf-token]').content")
    status, text = await carol.evaluate(
        "fetch('/console/holds/add', {method: 'POST', headers: {'Content-Type': 'application/x-www-form-urlencoded'},"
        f" body: 'scope=client&value=clients:exp&reason=x&csrf={csrf}'}}).then(async r => [r.status, await r.text()])")
    assert status == 403 and "legal holds" not in text and "needs a supervisor" in text
    assert "Holds" not in await carol.evaluate("document.querySelector('nav').textContent")

    dave = await log_in(browser, relay, "dave")
    await dave.evaluate("document.querySelector('a[accesskey=h]').click()")
    await dave.wait_for("document.getElementById('hold-add')")
    await select(dave, "hold-scope", "client")
    await dave.type_into("hold-value", "clients:exp")
    await dave.type_into("hold-reason", "SEC inquiry 2026-14")
    await submit(dave, "hold-submit", "document.querySelector('.notice')")
    assert "SEC inquiry 2026-14" in await dave.evaluate("document.getElementById('holds').textContent")
    rows = await relay.journal.fetchall("SELECT body_json FROM events WHERE kind = 'hold.added'")
    assert json.loads(rows[-1]["body_json"])["actor"] == "dave"


KEYS = {"Tab": ("Tab", 9, "\t"), "Enter": ("Enter", 13, "\r"), "ArrowDown": ("ArrowDown", 40, "")}


async def press(page: Page, k: str, alt: bool = False) -> None:
    """One key as the keyboard sends it through the browser's input pipeline (Tab, Enter, an
    arrow, or Alt+a letter for an access key)."""
    code, vk, text = KEYS[k] if k in KEYS else (f"Key{k.upper()}", ord(k.upper()), k)
    down: dict[str, Any] = {"key": k, "code": code, "windowsVirtualKeyCode": vk, "nativeVirtualKeyCode": vk,
                            "modifiers": 1 if alt else 0}
    if text:
        down.update(text=text, unmodifiedText=text)
    await page.call("Input.dispatchKeyEvent", {"type": "keyDown" if text else "rawKeyDown", **down})
    await page.call("Input.dispatchKeyEvent", {"type": "keyUp", **{x: y for x, y in down.items()
                                                                   if x not in ("text", "unmodifiedText")}})


FOCUSED = ("(() => { const a = document.activeElement; if (!a || a === document.body) return 'body';"
           " return a.id || (a.className ? a.tagName.toLowerCase() + '.' + a.className : '')"
           " || (a.tagName.toLowerCase() + ':' + (a.getAttribute('href') || a.textContent.trim())); })()")


async def tab_until(page: Page, done: str, limit: int = 150) -> list[str]:
    """Tab until `done` holds for the focused element; the focus order on the way."""
    order: list[str] = []
    for _ in range(limit):
        await press(page, "Tab")
        order.append(await page.evaluate(FOCUSED))
        if await page.evaluate(f"(a => {done})(document.activeElement)"):
            return order
    raise AssertionError(f"never focused {done!r}; focus went {order}")


async def test_queue_item_decide_with_the_keyboard_alone(relay: RelayApp, browser: Browser) -> None:
    mid = await client_says(relay, "kbd", "a guaranteed profit, keyboard only")
    page = await log_in(browser, relay, "carol")
    await page.goto(relay.base_url + "/console/dashboard")

    # the access key of the navigation moves to the queue
    await press(page, "q", alt=True)
    await page.wait_for("location.pathname === '/console/queue' && document.readyState === 'complete'"
                        " && document.getElementById('queue-rows')")
    # the first Tab reaches the skip link; Enter on it puts the next Tab into the page's content
    assert await tab_until(page, "a.classList.contains('skip')", limit=1) == ["a.skip"]
    await press(page, "Enter")
    await page.wait_for("document.activeElement && document.activeElement.id === 'main'")
    order = await tab_until(page, f"a.getAttribute('href') === '/console/item/{mid}'")
    filters = ["f-state", "f-rule", "f-channel", "f-desk", "f-employee", "f-older", "f-newer", "f-breached", "f-sort",
               "f-apply"]
    assert order[:len(filters)] == filters, order  # the filters in reading order, no navigation after the skip
    assert not any(x.startswith("a:/console/") and "item" not in x for x in order[:len(filters)])
    await press(page, "Enter")
    await page.wait_for(f"location.pathname === '/console/item/{mid}' && document.getElementById('decide')")

    # on the item page: skip link, the navigation in its order, log out, ... then the decision form
    order = await tab_until(page, "a.id === 'decision'")
    nav = ["a:/console/queue", "a:/console/search", "a:/console/dashboard", "a:/console/exports", "a:/console/policies"]
    assert order[0] == "a.skip" and order[1:1 + len(nav)] == nav, order
    assert order.index("decision") > len(nav) + 1
    for _ in range(10):
        if await page.evaluate("document.getElementById('decision').value") == "non-compliant":
            break
        await press(page, "ArrowDown")
    assert await page.evaluate("document.getElementById('decision').value") == "non-compliant"
    assert await tab_until(page, "a.id === 'reason'", limit=1) == ["reason"]
    await page.call("Input.insertText", {"text": "promises a return"})
    assert await tab_until(page, "a.id === 'decide-submit'", limit=1) == ["decide-submit"]
    await page.evaluate("window.__before = true")
    await press(page, "Enter")
    await page.wait_for("!window.__before && document.readyState === 'complete' && document.querySelector('.notice')")
    assert "non-compliant by carol" in await page.evaluate("document.getElementById('item-state').textContent")
    last = (await decisions(relay))[-1]
    assert {k: last.get(k) for k in ("message_id", "decision", "reviewer", "reason")} == {
        "message_id": mid, "decision": "non-compliant", "reviewer": "carol", "reason": "promises a return"}


async def test_conversation_prints_the_whole_timeline_without_the_console(relay: RelayApp, browser: Browser) -> None:
    user = "printer"
    long_word = "https://example.com/" + "x" * 400
    for i in range(30):
        await client_says(relay, user, f"message {i} of the print test" + (f" see {long_word}" if i == 7 else ""))
    row = await relay.journal.fetchall("SELECT conversation FROM messages WHERE sender_user = ? LIMIT 1", (user,))
    page = await log_in(browser, relay, "carol")
    await page.goto(relay.base_url + f"/console/conversation/{row[0]['conversation']}")
    await page.wait_for("document.querySelector('.transcript')")
    shown = "(s => document.querySelector(s).getClientRects().length > 0)"  # laid out at all
    assert await page.evaluate(f"{shown}('header nav')")  # the screen shows the console around it
    await page.call("Emulation.setEmulatedMedia", {"media": "print"})
    try:
        assert await page.evaluate("matchMedia('print').matches")
        for selector in ("header", "header nav", "footer", "#print", ".skip"):
            assert not await page.evaluate(f"{shown}({json.dumps(selector)})"), f"{selector} is printed"
        rows = await page.evaluate(
            "[...document.querySelectorAll('.transcript tr')].map(r => [getComputedStyle(r).display,"
            " r.getBoundingClientRect().height, r.textContent])")
        texts = " ".join(t for _, _, t in rows)
        assert all(f"message {i} of the print test" in texts for i in range(30))
        assert all(d != "none" and h > 0 for d, h, _ in rows), [r[:2] for r in rows if r[0] == "none" or r[1] <= 0]
        # nothing of the timeline is cut off: no clipping box around it, and no line wider than the page
        clipped = await page.evaluate(
            "(() => { const out = []; for (let n = document.querySelector('.transcript'); n && n !== document;"
            " n = n.parentNode) { const s = getComputedStyle(n); if (s.maxHeight !== 'none' || s.overflowY === 'hidden'"
            " || s.overflowY === 'scroll' || s.overflowY === 'auto') out.push(n.tagName); } return out; })()")
        assert clipped == []
        width = await page.evaluate("[document.querySelector('.transcript table').getBoundingClientRect().right,"
                                    " document.documentElement.clientWidth]")
        assert width[0] <= width[1] + 1, width
    finally:
        await page.call("Emulation.setEmulatedMedia", {"media": ""})
