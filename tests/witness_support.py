"""Witness servers on loopback for the tests: an HTTP record store, a UDP syslog server writing
a log file, and an RFC 3161 TSA (`openssl ts -reply` behind an aiohttp handler, keys made in
a temp dir)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.fake_server import FakeServer

TSA_CNF = """\
[ tsa ]
default_tsa = tsa_config1
[ tsa_config1 ]
dir = {dir}
serial = $dir/tsaserial
crypto_device = builtin
signer_cert = $dir/tsa.crt
certs = $dir/tsa.crt
signer_key = $dir/tsa.key
signer_digest = sha256
default_policy = 1.2.3.4.1
digests = sha256
accuracy = secs:1
ordering = yes
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = sha256
"""


def make_tsa_keys(directory: Path) -> Path:
    """A CA and a TSA certificate (extendedKeyUsage timeStamping) signed by it; returns the dir."""
    d = directory
    d.mkdir(parents=True, exist_ok=True)
    (d / "tsa_ext.cnf").write_text("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                                   "extendedKeyUsage=critical,timeStamping\n")
    (d / "tsa.cnf").write_text(TSA_CNF.format(dir=d))
    (d / "tsaserial").write_text("01\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    for args in (
        ["req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=relay test TSA CA", "-days", "2",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ["req", *ec, "-keyout", "tsa.key", "-out", "tsa.csr", "-subj", "/CN=relay test TSA"],
        ["x509", "-req", "-in", "tsa.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-set_serial", "2", "-out", "tsa.crt",
         "-days", "2", "-extfile", "tsa_ext.cnf"],
    ):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)
    return d


@dataclass
class TsaServer(FakeServer):
    """POST a TimeStampReq (DER), get `openssl ts -reply`'s TimeStampResp."""

    keys: Path = Path()
    replies: int = 0

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/tsa", self.stamp)

    async def stamp(self, request: web.Request) -> web.Response:
        query = await request.read()
        with tempfile.TemporaryDirectory(dir=self.keys) as tmp:
            q, r = Path(tmp) / "q.tsq", Path(tmp) / "r.tsr"
            q.write_bytes(query)
            proc = await asyncio.create_subprocess_exec(
                "openssl", "ts", "-reply", "-config", str(self.keys / "tsa.cnf"), "-queryfile", str(q), "-out", str(r),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            _, err = await proc.communicate()
            if proc.returncode != 0:
                return web.Response(status=500, text=err.decode(errors="replace"))
            self.replies += 1
            return web.Response(body=r.read_bytes(), content_type="application/timestamp-reply")


@dataclass
class RecordStore(FakeServer):
    """An HTTP witness: keeps every POSTed JSON record, answers GET with the list."""

    records: list[dict[str, Any]] = field(default_factory=list)
    token: str = "witness-token"
    down: bool = False

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/checkpoints", self.post)
        app.router.add_get("/checkpoints", self.get)

    def _authorised(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.token}"

    async def post(self, request: web.Request) -> web.Response:
        if self.down:
            return web.Response(status=503)
        if not self._authorised(request):
            return web.Response(status=401)
        self.records.append(await request.json())
        return web.json_response({"kept": True}, status=201)

    async def get(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.Response(status=401)
        return web.json_response(self.records)


class SyslogServer(asyncio.DatagramProtocol):
    """UDP syslog on loopback appending each datagram as a line to `log` (as rsyslog would)."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.transport: asyncio.DatagramTransport | None = None
        self.address = ""

    async def start(self) -> str:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=("127.0.0.1", 0))
        self.transport = transport  # type: ignore[assignment]
        self.address = "127.0.0.1:%d" % transport.get_extra_info("sockname")[1]
        return self.address

    def datagram_received(self, data: bytes, addr: Any) -> None:
        with self.log.open("ab") as f:
            f.write(data.rstrip(b"\n") + b"\n")

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    async def stop(self) -> None:
        if self.transport is not None:
            self.transport.close()


def records_in(lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line.split(" relay-checkpoint - ", 1)[1]) for line in lines if " relay-checkpoint - " in line]
