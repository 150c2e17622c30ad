"""Policy evaluation speed: the shipped policies plus a 10,000-term lexicon, per message.

Baseline, measured in the same run: one case-insensitive, word-bounded `re.search` per
keyword (what a straightforward implementation would do). Prints the median of 5 runs.
Times are this process's CPU time, so other load on the machine does not inflate them.
"""

from __future__ import annotations

import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from relay.policy import EvalInput, PolicySet, load_policy_dir  # noqa: E402
TERMS = 10_000
RUNS = 5
MESSAGE = (
    "Hi John, following up on our call this morning: the bond allocation looks fine and the "
    "settlement date is Thursday. Coupon is paid semi-annually at 4.25%. Let me know if you want "
    "to move forward with the trade at 101.5 today, or wait for the auction results. Thanks, Mary"
)
HIT_MESSAGE = (
    "Welcome aboard! Before we start: an insider says the numbers beat, so text me on WhatsApp "
    "and I will share more. For the deposit use card 4111 1111 1111 1111 or wire to DE89 3704 "
    "0044 0532 0130 00 before Friday. This is a hot tip, keep this between us please, thanks!"
)
_SYLLABLES = [
    "ka", "lo", "mi", "ter", "van", "sul", "dor", "pra", "nex", "qui", "bel", "tor", "zan",
    "fi", "gro", "hal", "jun", "mer", "pol", "rik", "sta", "tum", "vel", "wox", "yar",
]


def generated_terms(count: int, seed: int = 17) -> list[str]:
    """Deterministic pseudo-words and short phrases, like a vendor's watch-list lexicon."""
    rng = random.Random(seed)
    terms: set[str] = set()
    while len(terms) < count:
        words = [
            "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4)))
            for _ in range(rng.choice((1, 1, 1, 2, 3)))
        ]
        terms.add(" ".join(words))
    return sorted(terms)


def build_policy_dir(target: Path, terms: list[str]) -> None:
    """The shipped policies plus `bench.yaml` flagging any term of `lexicons/bench-10k.txt`."""
    for item in (ROOT / "policies").iterdir():
        if item.is_dir():
            shutil.copytree(item, target / item.name)
        else:
            shutil.copy2(item, target / item.name)
    (target / "lexicons" / "bench-10k.txt").write_text("\n".join(terms) + "\n", encoding="utf-8")
    (target / "bench.yaml").write_text(
        "schema: relay-policy/v1\n"
        "policy: {id: bench}\n"
        "rules:\n"
        "  - id: BENCH-001\n"
        "    match: {keywords: {lexicon: bench-10k}}\n"
        "    action: flag\n"
        f"    tests: [{{text: 'x {terms[0]} y', expect: flag}}, {{text: 'nothing here', expect: allow}}]\n",
        encoding="utf-8",
    )


def all_terms(policy_dir: Path, generated: list[str]) -> list[str]:
    lexicon = (policy_dir / "lexicons" / "market-conduct.txt").read_text(encoding="utf-8").splitlines()
    return generated + [t.strip() for t in lexicon if t.strip() and not t.startswith("#")]


def time_policy(policy_set: PolicySet, inp: EvalInput, loops: int) -> float:
    evaluate = policy_set.evaluate
    start = time.process_time()
    for _ in range(loops):
        evaluate(inp)
    return (time.process_time() - start) / loops * 1e6


def time_naive(patterns: list[re.Pattern[str]], text: str, loops: int) -> float:
    start = time.process_time()
    for _ in range(loops):
        [p for p in patterns if p.search(text)]
    return (time.process_time() - start) / loops * 1e6


def main() -> None:
    generated = generated_terms(TERMS)
    with tempfile.TemporaryDirectory(prefix="relay-bench-policy-") as tmp:
        policy_dir = Path(tmp)
        build_policy_dir(policy_dir, generated)
        started = time.perf_counter()
        policy_set = load_policy_dir(policy_dir)
        load_ms = (time.perf_counter() - started) * 1e3
        terms = all_terms(policy_dir, generated)
    text = MESSAGE[:280].ljust(280, ".")
    inp = EvalInput(direction="outbound", channel="webchat", text=text, conversation="c-bench", message_id="m-bench")
    verdict = policy_set.evaluate(inp)
    patterns = [re.compile(r"\b" + re.escape(t) + r"\b", re.IGNORECASE) for t in terms]
    time_policy(policy_set, inp, 200)
    fast = [time_policy(policy_set, inp, 5000) for _ in range(RUNS)]
    naive = [time_naive(patterns, text, 20) for _ in range(RUNS)]
    fast_us, naive_us = statistics.median(fast), statistics.median(naive)
    print(
        f"policy: {fast_us:.1f} µs/msg (median of {RUNS}), naive {naive_us:.0f} µs/msg, "
        f"ratio {naive_us / fast_us:.0f}x  [{len(terms)} terms, {len(policy_set.rules)} rules, "
        f"{len(text)} chars, verdict {verdict.action}, load {load_ms:.0f} ms]"
    )
    hit_text = HIT_MESSAGE[:280]
    hit = EvalInput(direction="outbound", channel="webchat", text=hit_text, first_in_conversation=True,
                    conversation="c-bench", message_id="m-bench-2")
    hit_verdict = policy_set.evaluate(hit)
    hit_fast = statistics.median(time_policy(policy_set, hit, 2000) for _ in range(RUNS))
    hit_naive = statistics.median(time_naive(patterns, hit_text, 20) for _ in range(RUNS))
    print(
        f"policy (message with hits): {hit_fast:.1f} µs/msg (median of {RUNS}), naive {hit_naive:.0f} µs/msg, "
        f"ratio {hit_naive / hit_fast:.0f}x  [verdict {hit_verdict.action}, rules {','.join(hit_verdict.rules)}]"
    )


if __name__ == "__main__":
    main()
