"""The `network: xmpp` channel block, validated once in `create` with errors naming the field."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from slixmpp import JID
from slixmpp.jid import InvalidJID

from bots.base import ChannelConfigError, unknown_settings
from bots.send_order import window_setting
from bots.xmpp.files import host_entry

KNOWN_KEYS = frozenset(
    {
        "network",
        "side",
        "mode",
        "jid",
        "secret",
        "password",
        "host",
        "port",
        "use_tls",
        "upload_service",
        "server_domain",
        "reconnect_base",
        "reconnect_max",
        "connect_timeout",
        "send_timeout",
        "fetch_timeout",
        "fetch_hosts",
        "stream_management",
        "send_window",
        "nick",
    }
)


@dataclass(frozen=True)
class XmppSettings:
    """`mode: component` is the staff side (XEP-0114); `mode: client` an ordinary account."""

    mode: str
    jid: str
    secret: str
    host: str
    port: int
    use_tls: bool = True
    """Client: STARTTLS (default on). Component: direct TLS to a TLS listener (default off:
    XEP-0114 has no TLS negotiation and servers such as Prosody accept components in plain TCP,
    so keep that port on loopback or a private network)."""
    upload_service: str = ""
    server_domain: str = ""
    reconnect_base: float = 0.5
    reconnect_max: float = 30.0
    connect_timeout: float = 10.0
    send_timeout: float = 10.0
    fetch_timeout: float = 30.0
    nick: str = ""
    stream_management: bool = True
    """Client mode: XEP-0198 when the server offers it (see bots.xmpp.link); components have none."""
    send_window: int = 16
    """Messages of one conversation in flight at once, each confirmed by the server; 1 waits
    for each message's confirmation before sending the next (see relay.outbox)."""
    fetch_hosts: tuple[str, ...] | None = None
    """Hosts (`host` = default port only, or `host:port`) incoming file URLs may be fetched
    from; None (unset) means only the host of the server's HTTP File Upload GET URLs."""

    @property
    def domain(self) -> str:
        """The XMPP server's own domain: where disco finds the upload service, where pings go."""
        if self.server_domain:
            return self.server_domain
        host = JID(self.jid).host
        if self.mode == "component" and "." in host:
            return host.split(".", 1)[1]
        return host


def _number(name: str, key: str, value: Any, kind: type) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = kind(value)
        except (TypeError, ValueError):
            raise ChannelConfigError(f"channel {name}: {key} must be a number, got {value!r}") from None
    if value <= 0:
        raise ChannelConfigError(f"channel {name}: {key} must be positive, got {value!r}")
    return kind(value)


def parse_settings(name: str, settings: Mapping[str, Any], side: str | None = None) -> XmppSettings:
    """`side` is the channel's configured side; `mode` defaults to what that side needs."""
    unknown = sorted(set(settings) - KNOWN_KEYS)
    if unknown:
        raise unknown_settings(name, "xmpp", unknown, KNOWN_KEYS)
    side = settings.get("side") or side
    mode = settings.get("mode") or ("component" if side == "staff" else "client")
    if mode not in ("component", "client"):
        raise ChannelConfigError(f"channel {name}: mode must be 'component' or 'client', got {mode!r}")
    if side is not None and (side == "staff") != (mode == "component"):
        raise ChannelConfigError(
            f"channel {name}: side {side!r} needs mode {'component' if side == 'staff' else 'client'!r}"
        )
    raw_jid = str(settings.get("jid") or "")
    if not raw_jid:
        raise ChannelConfigError(f"channel {name}: jid is required (component domain or account JID)")
    try:
        jid = JID(raw_jid)
    except InvalidJID as exc:
        raise ChannelConfigError(f"channel {name}: jid {raw_jid!r} is not a valid JID: {exc}") from None
    if mode == "component" and (jid.user or jid.resource):
        raise ChannelConfigError(f"channel {name}: a component jid is a bare domain like clients.example.org")
    if mode == "client" and not jid.user:
        raise ChannelConfigError(f"channel {name}: a client jid is an account like desk@example.org")
    secret_key = "secret" if mode == "component" else "password"
    secret = settings.get(secret_key)
    if not secret:
        raise ChannelConfigError(f"channel {name}: {secret_key} is required (use ${{ENV_VAR}})")
    host = str(settings.get("host") or jid.host)
    port = int(_number(name, "port", settings.get("port", 5347 if mode == "component" else 5222), int))
    use_tls = settings.get("use_tls", mode == "client")
    if not isinstance(use_tls, bool):
        raise ChannelConfigError(f"channel {name}: use_tls must be true or false")
    stream_management = settings.get("stream_management", True)
    if not isinstance(stream_management, bool):
        raise ChannelConfigError(f"channel {name}: stream_management must be true or false")
    send_window = window_setting(name, settings, 16)
    floats = {
        key: float(_number(name, key, settings[key], float))
        for key in ("reconnect_base", "reconnect_max", "connect_timeout", "send_timeout", "fetch_timeout")
        if key in settings
    }
    return XmppSettings(
        fetch_hosts=_fetch_hosts(name, settings.get("fetch_hosts")),
        stream_management=stream_management,
        send_window=send_window,
        mode=mode,
        jid=str(jid),
        secret=str(secret),
        host=host,
        port=port,
        use_tls=use_tls,
        upload_service=str(settings.get("upload_service") or ""),
        server_domain=str(settings.get("server_domain") or ""),
        nick=str(settings.get("nick") or ""),
        **floats,
    )


def _fetch_hosts(name: str, value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(entry, str) for entry in value):
        raise ChannelConfigError(f"channel {name}: fetch_hosts must be a list of host or host:port strings")
    try:
        return tuple(host_entry(entry) for entry in value)
    except ValueError as exc:
        raise ChannelConfigError(f"channel {name}: fetch_hosts: {exc}") from None
