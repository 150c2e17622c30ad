"""SMS segment rules: which encoding a text needs and where a long text is cut.

A text that fits the GSM-7 alphabet travels 160 septets in one SMS, 153 per part when
concatenated (the rest is the UDH); anything else is UCS-2, 70 UTF-16 units alone and 67 per
part. An extension character (e.g. `€`, `{`) costs two septets and an astral character (emoji)
two UTF-16 units; neither is ever cut in half.
"""

from __future__ import annotations

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")

GSM7_SINGLE, GSM7_PART = 160, 153
UCS2_SINGLE, UCS2_PART = 70, 67


def is_gsm7(text: str) -> bool:
    return all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text)


def _cost(ch: str, gsm: bool) -> int:
    if gsm:
        return 2 if ch in GSM7_EXTENSION else 1
    return 2 if ord(ch) > 0xFFFF else 1


def encoding(text: str) -> str:
    """`GSM-7` or `UCS-2`: what the carrier will use for `text`."""
    return "GSM-7" if is_gsm7(text) else "UCS-2"


def segments(text: str) -> list[str]:
    """`text` cut into the SMS parts a phone reassembles (one part when it fits alone)."""
    gsm = is_gsm7(text)
    single, part = (GSM7_SINGLE, GSM7_PART) if gsm else (UCS2_SINGLE, UCS2_PART)
    if sum(_cost(ch, gsm) for ch in text) <= single:
        return [text] if text else []
    parts: list[str] = []
    current: list[str] = []
    used = 0
    for ch in text:
        cost = _cost(ch, gsm)
        if used + cost > part:
            parts.append("".join(current))
            current, used = [], 0
        current.append(ch)
        used += cost
    if current:
        parts.append("".join(current))
    return parts


def messages(text: str, max_segments: int) -> list[str]:
    """`text` as message bodies of at most `max_segments` parts each, cut on part boundaries.

    Twilio concatenates the parts of one body itself; a longer text goes as several bodies.
    """
    parts = segments(text)
    if len(parts) <= max_segments:
        return ["".join(parts)] if parts else []
    return ["".join(parts[i:i + max_segments]) for i in range(0, len(parts), max_segments)]
