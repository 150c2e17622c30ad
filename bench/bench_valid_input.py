"""What making input valid costs per message (relay.valid_input at the hub's door, the UTF-8
check in `Journal.append`), against a baseline measured in the same run: encoding the same
message's `message.received` body as canonical JSON, which every message pays anyway.

Prints the median of 5 runs of each; CPU time of this process, so load elsewhere does not count.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from relay.hub_records import received_body  # noqa: E402
from relay.journal.chain import canonical_json  # noqa: E402
from relay.journal.journal import _check_utf8  # noqa: E402
from relay.model import Inbound, Party  # noqa: E402
from relay.valid_input import valid_inbound  # noqa: E402

RUNS = 5
N = 20_000
TEXTS = {
    "ascii": "Hi John, the bond allocation looks fine and the settlement date is Thursday. Thanks, Mary",
    "unicode": "您好，我想查询一下我的账户余额 — Grüße aus München, café ☕ 4,50 €",
    "surrogate": "card 4111 1111 1111 1111 \ud800 please check",
}


def _inbound(text: str) -> Inbound:
    return Inbound(channel="webchat", platform_id="v1:a1", sender=Party("webchat", "v1", "Vera Visitor"),
                   chat="v1", text=text, sent_at=1.7e9, raw=b'{"type":"message","id":"a1","text":"..."}')


def _cpu(fn: object, n: int) -> float:
    start = time.process_time()
    for _ in range(n):
        fn()  # type: ignore[operator]
    return (time.process_time() - start) / n


def main() -> None:
    for name, text in TEXTS.items():
        inb = valid_inbound(_inbound(text))
        body = received_body(inb, "m-1", "inbound", (), "", None, None)
        body_json = canonical_json(body)
        base = statistics.median(_cpu(lambda: canonical_json(body), N) for _ in range(RUNS))
        raw = _inbound(text)
        check = statistics.median(_cpu(lambda: valid_inbound(raw), N) for _ in range(RUNS))
        utf8 = statistics.median(
            _cpu(lambda: body_json.isascii() or _check_utf8("message.received", body_json), N) for _ in range(RUNS))
        print(f"valid_input {name:9s}: encode body {base * 1e6:6.2f} us; valid_inbound {check * 1e6:5.2f} us"
              f" (ratio {check / base:.3f}); append's UTF-8 check {utf8 * 1e6:5.2f} us (ratio {utf8 / base:.3f})")


if __name__ == "__main__":
    main()
