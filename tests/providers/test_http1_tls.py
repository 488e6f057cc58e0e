"""UpstreamHTTP over TLS against a loopback TLS server with a self-signed certificate."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from pathlib import Path
from typing import Any

import orjson
import pytest
from tests.providers.http1_servers import RawServer, answer
from yarl import URL

from lockgate.providers.base import ProviderError
from lockgate.providers.http1 import pool as pool_module
from lockgate.providers.upstream_http import UpstreamHTTP
from lockgate.settings import Timeouts

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

OK = orjson.dumps({"ok": True})


@pytest.fixture(scope="module")
def cert_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    d = tmp_path_factory.mktemp("tls")
    cert_path, key_path = d / "cert.pem", d / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def tls_server(cert_files: tuple[Path, Path], seen: dict[str, Any]) -> RawServer:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*cert_files)
    ctx.set_alpn_protocols(["h2", "http/1.1"])

    def sni(sock: Any, server_name: str | None, _ctx: Any) -> None:
        seen.setdefault("sni", []).append(server_name)

    ctx.sni_callback = sni

    async def handler(server: RawServer, conn: int, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        seen.setdefault("alpn", []).append(
            writer.get_extra_info("ssl_object").selected_alpn_protocol())
        while (await server.read_request(conn, reader)) is not None:
            writer.write(answer(OK))
            await writer.drain()

    srv = RawServer(handler, ssl=ctx)
    return await srv.start()


def client(**kw: Any) -> UpstreamHTTP:
    return UpstreamHTTP(timeouts=Timeouts(connect=3, first_token=5, idle=5, total=10),
                        headers={}, **kw)


async def test_tls_with_injected_context(cert_files: tuple[Path, Path]) -> None:
    seen: dict[str, Any] = {}
    srv = await tls_server(cert_files, seen)
    ctx = ssl.create_default_context(cafile=str(cert_files[0]))
    http = client(ssl_context=ctx)
    url = URL(f"https://localhost:{srv.port}/v1/chat/completions")
    try:
        for _ in range(3):
            _raw, doc = await http.post_json(url, b"{}")
            assert doc == {"ok": True}
    finally:
        await http.aclose()
        await srv.stop()
    assert srv.connections == 1  # keep-alive over TLS
    assert seen["sni"] == ["localhost"]
    assert srv.requests[0].headers["host"] == f"localhost:{srv.port}"


async def test_tls_default_context_alpn_and_verification(
    cert_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}
    srv = await tls_server(cert_files, seen)
    url = URL(f"https://localhost:{srv.port}/v1/chat/completions")
    # the default context does not trust the self-signed certificate: refused
    monkeypatch.setattr(pool_module, "_DEFAULT_SSL", None)
    http = client()
    try:
        with pytest.raises(ProviderError) as err:
            await http.post_json(url, b"{}")
        assert err.value.kind == "connection"
        assert "CERTIFICATE_VERIFY_FAILED" in err.value.message
    finally:
        await http.aclose()
    # the default context trusting our CA: ALPN offers http/1.1 (the server would pick h2
    # if it were offered)
    real = ssl.create_default_context
    monkeypatch.setattr(pool_module, "_DEFAULT_SSL", None)
    monkeypatch.setattr(pool_module.ssl, "create_default_context",
                        lambda: real(cafile=str(cert_files[0])))
    http = client()
    try:
        _raw, doc = await http.post_json(url, b"{}")
    finally:
        await http.aclose()
        await srv.stop()
        monkeypatch.setattr(pool_module, "_DEFAULT_SSL", None)
    assert doc == {"ok": True}
    assert seen["alpn"][-1] == "http/1.1"
