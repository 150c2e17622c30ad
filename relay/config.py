"""config.yaml → typed, validated settings.

Validation happens once, at start, against `config.schema.json`, and every problem is
reported as `file:path: reason` so an operator can fix the file without reading code.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import jsonschema
import yaml

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

DEFAULT_NOTICES: dict[str, str] = {
    "blocked": "Your message was not delivered because it breaches our communication policy.",
    "oversize": "A file you sent is larger than we can accept and was not delivered.",
    "refused": "This message was not forwarded: you are not a configured employee of this desk.",
    "handover": "Your conversation has been handed over to a colleague, who has your history.",
    "undeliverable": "Your message could not be delivered: {reason}",
    "undeliverable_client": "Your message could not be delivered. Please try again later.",
    "unknown_conversation": "This message was not forwarded: it is not part of a conversation the relay knows."
                            " Answer a client in that client's own topic or thread.",
    "rejected": "Your message was reviewed by compliance and will not be delivered.",
    "held": "Your message is held for a compliance review before it is delivered.",
    "released": "Your message was cleared by the compliance review and sent.",
}


Lines = Mapping[tuple[str, ...], int]
"""Setting path (e.g. ("channels", "webchat", "path")) → its line in the config file."""


def key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Where each setting of a YAML text is, for `file:line:` in error messages ({} if unparsable)."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return {}
    lines: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                sub = path + (str(key.value),)
                lines[sub] = key.start_mark.line + 1
                walk(value, sub)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                sub = path + (str(i),)
                lines[sub] = item.start_mark.line + 1
                walk(item, sub)

    if root is not None:
        walk(root, ())
    return lines


def did_you_mean(word: str, known: Any) -> str:
    """`; did you mean `x`?` for a near miss among `known`, else ``."""
    close = difflib.get_close_matches(str(word), sorted(str(k) for k in known), n=1, cutoff=0.6)
    return f"; did you mean `{close[0]}`?" if close else ""


def locate(where: str, lines: Lines, path: tuple[str, ...]) -> str:
    """`file:line` of the setting at `path`, or of its nearest enclosing setting in the file."""
    for n in range(len(path), 0, -1):
        line = lines.get(tuple(str(p) for p in path[:n]))
        if line is not None:
            return f"{where}:{line}"
    return where


class ConfigError(ValueError):
    """Every problem found in a config file, one per line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class ChannelSettings:
    name: str
    network: str
    side: str
    welcome: str | None
    settings: Mapping[str, Any]
    give_up_after: float | None = None
    """Seconds after which the outbox stops retrying a delivery to this channel (None: outbox default)."""


@dataclass(frozen=True)
class Employee:
    id: str
    name: str
    channel: str
    address: str
    password_hash: str = ""
    groups: tuple[str, ...] = ()
    active: bool = True


@dataclass(frozen=True)
class Desk:
    name: str
    clients: tuple[str, ...]
    members: tuple[str, ...]


@dataclass(frozen=True)
class Config:
    """Validated settings; `raw` keeps the whole mapping for sections other modules own."""

    path: Path | None
    data_dir: Path
    host: str
    port: int
    public_url: str
    policies_dir: Path
    policies_reload: float
    shadow_policies_dir: Path | None
    hmac_key: bytes | None
    checkpoint_every: int
    checkpoint_seconds: float
    checkpoint_dir: Path | None
    synchronous: str
    max_attachment_bytes: int
    outbox_base_delay: float
    outbox_max_delay: float
    notices: Mapping[str, str]
    channels: Mapping[str, ChannelSettings]
    employees: Mapping[str, Employee]
    desks: Mapping[str, Desk]
    log_level: str = "INFO"
    journal_url: str | None = None
    journal_lease_seconds: float = 10.0
    outbox_give_up_after: float = 86400.0
    raw: Mapping[str, Any] = field(default_factory=dict)
    witnesses: tuple[Any, ...] = ()
    """`journal.witnesses`, built (relay/journal/witness.py): where signed checkpoints are copied."""
    replica: Any = None
    """`journal.replica`, built (relay/journal/replica.py): the WORM copy, or None."""
    lines: Lines = field(default_factory=dict)

    def where(self, *path: str) -> str:
        """`file:line` of a setting, for an error about it found after loading (e.g. a channel's)."""
        return locate(str(self.path) if self.path else "config", self.lines, tuple(path))

    def employee_by_address(self, channel: str, address: str) -> Employee | None:
        for emp in self.employees.values():
            if emp.channel == channel and emp.address == address:
                return emp
        return None

    def desk_for_channel(self, channel: str) -> Desk | None:
        for desk in self.desks.values():
            if channel in desk.clients:
                return desk
        return None


def _schema() -> dict[str, Any]:
    text = resources.files("relay").joinpath("config.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


def _expand(value: Any, path: tuple[str, ...], problem: Any, env: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        def sub(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in env:
                problem(path, f"environment variable {name} is not set (export it before starting relay)")
                return ""
            return env[name]
        return _ENV.sub(sub, value)
    if isinstance(value, dict):
        return {k: _expand(v, path + (str(k),), problem, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, path + (str(i),), problem, env) for i, v in enumerate(value)]
    return value


def _dotted(path: tuple[str, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out or "(top)"


def _schema_problems(err: jsonschema.ValidationError) -> list[tuple[tuple[str, ...], str]]:
    """One (setting path, reason) per problem; an unknown key is named, with a near miss."""
    path = tuple(str(x) for x in err.absolute_path)
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        known = set(err.schema.get("properties", {}))
        extra = sorted(k for k in err.instance if k not in known)
        if extra:
            return [(path + (k,), f"unknown setting{did_you_mean(k, known)}") for k in extra]
    return [(path, err.message)]


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read, expand `${ENV}` and validate a YAML config file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{p}: cannot read config: {exc.strerror or exc}"]) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError([f"{p}{line}: invalid YAML: {getattr(exc, 'problem', exc)}"]) from exc
    if not isinstance(data, dict):
        raise ConfigError([f"{p}: the config must be a mapping of settings"])
    return config_from_dict(data, base=p.parent, path=p, env=env, lines=key_lines(text))


def config_from_dict(
    data: Mapping[str, Any],
    base: Path | None = None,
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    lines: Lines | None = None,
) -> Config:
    """Validate a config mapping; relative paths resolve against `base` (the file's folder).

    Every problem reads `file:line: setting: reason` (no line for a mapping not read from a file).
    """
    where = str(path) if path else "config"
    lines = lines or {}
    problems: list[str] = []

    def problem(at: tuple[str, ...], reason: str) -> None:
        problems.append(f"{locate(where, lines, at)}: {_dotted(at)}: {reason}")

    data = _expand(dict(data), (), problem, os.environ if env is None else env)
    validator = jsonschema.Draft202012Validator(_schema())
    for err in sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path)):
        for at, reason in _schema_problems(err):
            problem(at, reason)
    if problems:
        raise ConfigError(problems)

    root = base or Path.cwd()

    def rel(value: str | None) -> Path | None:
        if value is None:
            return None
        q = Path(value).expanduser()
        return q if q.is_absolute() else (root / q).resolve()

    channels: dict[str, ChannelSettings] = {}
    for name, block in data["channels"].items():
        if block.get("enabled", True) is False:
            continue
        rest = {k: v for k, v in block.items() if k not in ("network", "side", "welcome", "enabled", "give_up_after")}
        give_up = block.get("give_up_after")
        channels[name] = ChannelSettings(name, block["network"], block["side"], block.get("welcome"), rest,
                                         None if give_up is None else float(give_up))

    employees: dict[str, Employee] = {}
    for eid, block in (data.get("employees") or {}).items():
        staff = block["staff"]
        if staff["channel"] not in channels:
            problem(("employees", eid, "staff", "channel"),
                    f"no channel named {staff['channel']!r}{did_you_mean(staff['channel'], channels)}")
        elif channels[staff["channel"]].side != "staff":
            problem(("employees", eid, "staff", "channel"), f"{staff['channel']!r} is not a staff-side channel")
        employees[eid] = Employee(
            id=eid,
            name=block.get("name", eid),
            channel=staff["channel"],
            address=str(staff["address"]),
            password_hash=block.get("password_hash", ""),
            groups=tuple(block.get("groups", ())),
            active=block.get("active", True),
        )

    desks: dict[str, Desk] = {}
    served: dict[str, str] = {}
    for dname, block in (data.get("desks") or {}).items():
        for i, ch in enumerate(block["clients"]):
            at = ("desks", dname, "clients", str(i))
            if ch not in channels:
                problem(at, f"no channel named {ch!r}{did_you_mean(ch, channels)}")
            elif channels[ch].side != "client":
                problem(at, f"{ch!r} is not a client-side channel")
            elif ch in served:
                problem(at, f"{ch!r} is already served by desk {served[ch]!r}")
            served[ch] = dname
        for i, member in enumerate(block["members"]):
            if member not in employees:
                problem(("desks", dname, "members", str(i)), f"no employee named {member!r}{did_you_mean(member, employees)}")
        desks[dname] = Desk(dname, tuple(block["clients"]), tuple(block["members"]))
    for name, ch in channels.items():
        if ch.side == "client" and name not in served:
            problem(("channels", name), "client channel is served by no desk (add it to a desk's clients)")
    if problems:
        raise ConfigError(problems)

    listen = data.get("listen") or {}
    pol = data.get("policies") or {}
    jr = data.get("journal") or {}
    from relay.journal import replica, witness  # here, not at the top: `relay review list --help` stays light

    try:
        witnesses = tuple(witness.from_config(jr.get("witnesses"), root))
        replica_target = replica.target_from_config(jr.get("replica"), root)
    except (witness.WitnessError, replica.ReplicaError) as exc:
        raise ConfigError([f"{where}: {exc}"]) from None
    ob = data.get("outbox") or {}
    host = listen.get("host", "127.0.0.1")
    port = int(listen.get("port", 8080))
    key = jr.get("hmac_key")
    return Config(
        path=path,
        data_dir=rel(data.get("data_dir", "./data")) or root,
        host=host,
        port=port,
        public_url=data.get("public_url", f"http://{host}:{port}"),
        policies_dir=rel(pol.get("dir", "./policies")) or root,
        policies_reload=float(pol.get("reload_seconds", 1.0)),
        shadow_policies_dir=rel(pol.get("shadow")),
        hmac_key=key.encode() if key else None,
        checkpoint_every=int(jr.get("checkpoint_every", 1000)),
        checkpoint_seconds=float(jr.get("checkpoint_seconds", 60.0)),
        checkpoint_dir=rel(jr.get("checkpoint_dir")),
        synchronous=jr.get("synchronous", "FULL"),
        journal_url=jr.get("url") or None,
        journal_lease_seconds=float(jr.get("lease_seconds", 10.0)),
        max_attachment_bytes=int((data.get("limits") or {}).get("max_attachment_bytes", 25 * 1024 * 1024)),
        outbox_base_delay=float(ob.get("base_delay", 0.5)),
        outbox_max_delay=float(ob.get("max_delay", 60.0)),
        notices={**DEFAULT_NOTICES, **(data.get("notices") or {})},
        channels=channels,
        employees=employees,
        desks=desks,
        log_level=data.get("log_level", "INFO"),
        outbox_give_up_after=float(ob.get("give_up_after", 86400.0)),
        raw=data,
        witnesses=witnesses,
        replica=replica_target,
        lines=lines,
    )
