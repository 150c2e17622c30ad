"""Evidence export: three formats, signed manifest, offline verification, filters."""

from __future__ import annotations

import email
import email.policy
import json
from pathlib import Path

import pytest

from relay.evidence import ExportFilter, parse_formats, verify_export, write_export, ExportError
from relay.evidence.keys import load_private_key, load_public_key
from relay.journal import Journal
from tests.compliance_support import PNG, sample_history


@pytest.fixture
async def recorded(tmp_path: Path):
    j = await Journal.open(tmp_path / "data")
    h = await sample_history(j)
    await j.close()  # writes the checkpoint that covers the history
    j = await Journal.open(tmp_path / "data", read_only=True)
    yield j, h, tmp_path
    await j.close()


def key_of(tmp: Path):
    return load_private_key(tmp / "data" / "keys" / "journal_ed25519")


def pub_of(tmp: Path):
    return load_public_key(str(tmp / "data" / "keys" / "journal_ed25519.pub"))


async def test_export_all_formats_verifies_with_the_public_key(recorded) -> None:
    j, h, tmp = recorded
    out = tmp / "export"
    res = await write_export(j, out, ExportFilter(), key_of(tmp), actor="carol")
    m = res.manifest
    assert m["counts"]["messages"] == 7 and m["counts"]["conversations"] == 2
    assert m["checkpoint"] is not None and m["checkpoint"]["upto_seq"] >= max(h.seqs.values())
    assert "events.jsonl" in m["files"]
    assert len([f for f in m["files"] if f.startswith("eml/")]) == 7
    assert sorted(f for f in m["files"] if f.startswith("transcripts/")) == ["transcripts/c-ann.html", "transcripts/c-ben.html"]
    report = verify_export(out, pub_of(tmp))
    assert report.ok, report.problems
    assert report.key_pinned and report.events == m["counts"]["events"] and report.files == len(m["files"])


async def test_eml_parses_with_headers_and_attachment_parts(recorded) -> None:
    j, h, tmp = recorded
    out = tmp / "export"
    await write_export(j, out, ExportFilter(conversation="c-ann"), key_of(tmp), formats=("eml",))
    files = sorted((out / "eml" / "c-ann").glob("*.eml"))
    assert len(files) == 5
    parsed = {}
    for f in files:
        msg = email.message_from_bytes(f.read_bytes(), policy=email.policy.default)
        assert not msg.defects
        parsed[msg["X-Relay-Message-Id"]] = msg
    a2 = parsed[h.ids["a2"]]
    assert a2["X-Relay-Channel"] == "webdesk" and a2["X-Relay-Conversation"] == "c-ann"
    assert a2["X-Relay-Verdict"] == "allow" and a2["X-Relay-Direction"] == "outbound"
    assert a2.get_body(("plain",)).get_content().strip() == "Sure, here is the form"
    parts = {p.get_filename(): p for p in a2.iter_attachments()}
    assert parts["chart.png"].get_content_type() == "image/png" and parts["chart.png"].get_content() == PNG
    assert parts["form.pdf"].get_content() == b"%PDF-1.4 form"
    a3 = parsed[h.ids["a3"]]
    assert a3["X-Relay-Verdict"] == "flag" and a3["X-Relay-Rules"] == "MNPI-001"
    assert parsed[h.ids["a4"]]["In-Reply-To"] == f"<{h.ids['a3']}@relay.invalid>"


async def test_html_transcript_shows_edits_deletions_verdicts_and_handover(recorded) -> None:
    j, h, tmp = recorded
    out = tmp / "export"
    await write_export(j, out, ExportFilter(), key_of(tmp), formats=("html",))
    page = (out / "transcripts" / "c-ann.html").read_text(encoding="utf-8")
    assert "edit of message #" in page and "was “Is there a guaranteed return?”" in page
    assert "deleted by the sender later" in page and "deleted message #" in page
    assert "MNPI-001" in page and "v-flag" in page
    assert "conversation assigned to bob" in page and "alice left" in page
    png_links = [f for f in (out / "attachments").rglob("chart.png")]
    assert len(png_links) == 1 and png_links[0].read_bytes() == PNG
    ben = (out / "transcripts" / "c-ben.html").read_text(encoding="utf-8")
    assert "我想买股票" in ben and "v-quarantine" in ben


@pytest.mark.parametrize("change", ["byte", "add", "remove", "manifest"])
async def test_verify_export_detects_tampering(recorded, change: str) -> None:
    j, h, tmp = recorded
    out = tmp / "export"
    await write_export(j, out, ExportFilter(), key_of(tmp))
    assert verify_export(out, pub_of(tmp)).ok
    target = sorted((out / "eml").rglob("*.eml"))[0]
    rel = target.relative_to(out).as_posix()
    if change == "byte":
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0x01
        target.write_bytes(bytes(data))
        want = f"{rel}: changed"
    elif change == "add":
        (out / "eml" / "extra.eml").write_bytes(b"From: x@y\r\n\r\nhi\r\n")
        want = "eml/extra.eml: added"
    elif change == "remove":
        target.unlink()
        want = f"{rel}: removed"
    else:
        m = json.loads((out / "manifest.json").read_text())
        m["counts"]["messages"] = 1
        (out / "manifest.json").write_text(json.dumps(m))
        want = "manifest.json: signature does not verify"
    report = verify_export(out, pub_of(tmp))
    assert not report.ok
    assert any(p.startswith(want) for p in report.problems), report.problems


async def test_event_line_altered_and_manifest_resigned_with_another_key_is_caught(recorded) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from relay.evidence.manifest import write_manifest
    j, h, tmp = recorded
    out = tmp / "export"
    await write_export(j, out, ExportFilter(), key_of(tmp), formats=("jsonl",))
    lines = (out / "events.jsonl").read_text(encoding="utf-8").splitlines()
    ev = json.loads(lines[1])
    ev["body"]["text"] = "something else"
    lines[1] = json.dumps(ev, sort_keys=True, ensure_ascii=False)
    (out / "events.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    meta = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").unlink()
    write_manifest(out, Ed25519PrivateKey.generate(), {k: v for k, v in meta.items()
                                                       if k not in ("files", "signature", "public_key", "format")})
    report = verify_export(out, pub_of(tmp))
    assert any("not the given public key" in p for p in report.problems)
    assert any(f"seq {ev['seq']}: hash mismatch" in p for p in report.problems)


async def test_filters_select_conversation_client_employee_rule_and_time(recorded) -> None:
    j, h, tmp = recorded
    key = key_of(tmp)

    async def count(flt: ExportFilter, name: str) -> int:
        res = await write_export(j, tmp / name, flt, key, formats=("jsonl",))
        return res.manifest["counts"]["messages"]

    assert await count(ExportFilter(conversation="c-ben"), "a") == 2
    assert await count(ExportFilter(client="webchat:ann"), "b") == 5
    assert await count(ExportFilter(client="ben"), "c") == 2
    assert await count(ExportFilter(employee="bob"), "d") == 2
    assert await count(ExportFilter(rule="MNPI-001"), "e") == 2
    assert await count(ExportFilter(since=9e9), "f") == 0
    res = await write_export(j, tmp / "g", ExportFilter(rule="MNPI-002"), key, formats=("jsonl",))
    kinds = [json.loads(x)["kind"] for x in (tmp / "g" / "events.jsonl").read_text().splitlines()]
    assert kinds == ["message.received", "policy.verdict"]
    assert verify_export(tmp / "g", pub_of(tmp)).ok


async def test_restricted_client_is_withheld_unless_included(recorded) -> None:
    j, h, tmp = recorded
    res = await write_export(j, tmp / "r1", ExportFilter(), key_of(tmp), restricted_clients={"webchat:ben": 10**9})
    assert res.manifest["counts"]["messages"] == 5 and res.manifest["counts"]["withheld_restricted"] == 2
    res = await write_export(j, tmp / "r2", ExportFilter(), key_of(tmp), restricted_clients={"webchat:ben": 10**9},
                             include_restricted=True)
    assert res.manifest["counts"]["messages"] == 7 and res.manifest["include_restricted"] is True


async def test_bad_input_is_a_clear_error(recorded, tmp_path: Path) -> None:
    j, h, tmp = recorded
    (tmp / "busy").mkdir()
    (tmp / "busy" / "x").write_text("x")
    with pytest.raises(ExportError, match="not an empty directory"):
        await write_export(j, tmp / "busy", ExportFilter(), key_of(tmp))
    with pytest.raises(ExportError, match="unknown export format 'pdf'"):
        parse_formats(["eml,pdf"])
    assert parse_formats(None) == ("jsonl", "eml", "html") and parse_formats(["html"]) == ("html",)
    report = verify_export(tmp / "nowhere")
    assert not report.ok and "not a directory" in report.problems[0]


async def test_unfiltered_export_is_the_whole_chain_and_a_forged_checkpoint_is_caught(recorded) -> None:
    j, h, tmp = recorded
    out = tmp / "whole"
    res = await write_export(j, out, ExportFilter(), key_of(tmp), formats=("jsonl",))
    seqs = [json.loads(x)["seq"] for x in (out / "events.jsonl").read_text().splitlines()]
    head = (await j.fetchall("SELECT MAX(seq) AS n FROM events"))[0]["n"]
    assert seqs == list(range(1, head + 1)) and res.manifest["head"]["seq"] == head
    assert any(f.startswith("blobs/") and f.count("/") == 2 for f in res.manifest["files"])
    assert verify_export(out, pub_of(tmp)).ok
    from relay.evidence.manifest import write_manifest
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    meta = json.loads((out / "manifest.json").read_text())
    meta["checkpoint"]["head_hash"] = "0" * 64
    (out / "manifest.json").unlink()
    forger = Ed25519PrivateKey.generate()
    write_manifest(out, forger, {k: v for k, v in meta.items() if k not in ("files", "signature", "public_key", "format")})
    report = verify_export(out)   # even without a pinned key
    assert any("checkpoint seq" in p and "signature does not verify" in p for p in report.problems), report.problems
