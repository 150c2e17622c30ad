"""The README's layout tree names every package folder of relay/ and bots/, and no folder that is gone."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def layout_block() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Layout\n"):]
    return section[section.index("```\n") + 4: section.index("\n```", section.index("```\n") + 4)]


def tree_entries(block: str) -> dict[str, set[str]]:
    """Top folder → the sub-folders the tree lists under it (`  name/` at the start of a line)."""
    out: dict[str, set[str]] = {}
    top = ""
    for line in block.splitlines():
        m = re.match(r"^(\S+)/\s", line + " ")
        if m:
            top = m.group(1)
            out.setdefault(top, set())
            continue
        m = re.match(r"^  ([a-z_]+)/\s", line + " ")
        if m and top:
            out[top].add(m.group(1))
    return out


def test_the_layout_tree_matches_the_package_folders() -> None:
    listed = tree_entries(layout_block())
    for top in ("relay", "bots"):
        folders = {p.name for p in (ROOT / top).iterdir() if (p / "__init__.py").exists()}
        assert listed.get(top) == folders, f"README layout under {top}/ differs from the folders"
