"""chat.agent.providers.netstream: the providers' sockets on plain asyncio, through the SDKs'
HTTP client (httpx2) against real servers on loopback: plain and TLS, a body of many small
reads, a large one read slowly (reading pauses and resumes), a stalled one (read timeout),
a refused connection, a pooled connection the server closed."""

import asyncio
import datetime
import ipaddress
import ssl

import httpx2
import pytest

from chat.agent.providers import netstream
from chat.agent.providers.base import ProviderConfig
from chat.agent.providers import build_provider

pytestmark = pytest.mark.asyncio


def client(**kwargs) -> httpx2.AsyncClient:
    return netstream.with_network_backend(httpx2.AsyncClient(**kwargs))


class Server:
    """HTTP/1.1 on loopback; `respond(writer, path)` writes each response."""

    def __init__(self, respond, ssl_context=None):
        self.respond = respond
        self.ssl_context = ssl_context
        self.connections = 0
        self.server = None

    async def __aenter__(self):
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0, ssl=self.ssl_context)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self.server.close()

    def url(self, path="/", scheme="http"):
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    async def handle(self, reader, writer):
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1].decode()
                if not await self.respond(writer, path):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


CHUNKED = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


async def test_the_providers_pools_use_the_plain_asyncio_backend():
    for kind in ("openai", "anthropic"):
        provider = build_provider(ProviderConfig(provider=kind, model="m", api_key="k-123456"))
        try:
            pool = provider._client._client._transport._pool
            assert isinstance(pool._network_backend, netstream.NetworkBackend), kind
        finally:
            await provider.aclose()


async def test_a_body_of_many_small_reads_arrives_whole_and_in_order():
    async def respond(writer, path):
        writer.write(CHUNKED)
        for n in range(200):
            writer.write(chunk(b"data: %d\n\n" % n))
            await writer.drain()
            await asyncio.sleep(0.001)  # each in a read of its own
        writer.write(b"0\r\n\r\n")
        return True

    async with Server(respond) as server, client() as http:
        async with http.stream("GET", server.url()) as response:
            body = b"".join([part async for part in response.aiter_raw()])
        assert body == b"".join(b"data: %d\n\n" % n for n in range(200))
        # The connection went back to the pool and serves the next request.
        async with http.stream("GET", server.url()) as response:
            assert (await response.aread()).startswith(b"data: 0\n\n")
        assert server.connections == 1


async def test_a_large_body_read_slowly_pauses_reading_and_loses_nothing(monkeypatch):
    monkeypatch.setattr(netstream, "HIGH_WATER", 64 * 1024)
    monkeypatch.setattr(netstream, "LOW_WATER", 16 * 1024)
    size = 4 * 1024 * 1024
    payload = bytes(range(256)) * (size // 256)
    paused = []
    original = netstream._Protocol.data_received

    def data_received(self, data):
        original(self, data)
        if self.reading_paused:
            paused.append(self.buffered)

    monkeypatch.setattr(netstream._Protocol, "data_received", data_received)

    async def respond(writer, path):
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size)
        writer.write(payload)
        await writer.drain()
        return True

    async with Server(respond) as server, client() as http:
        received = bytearray()
        async with http.stream("GET", server.url()) as response:
            async for part in response.aiter_raw():
                received += part
                await asyncio.sleep(0.0005)  # a slow reader
        assert bytes(received) == payload
    assert paused, "reading never paused for a reader that fell behind"
    assert max(paused) < 64 * 1024 + 300_000  # paused near the mark, not after buffering the body


async def test_tls(tmp_path):
    cert, key = self_signed(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)

    async def respond(writer, path):
        writer.write(CHUNKED + chunk(b"data: secure\n\n") + b"0\r\n\r\n")
        return True

    async with Server(respond, ssl_context=server_context) as server, \
            client(verify=ssl.create_default_context(cafile=str(cert))) as http:
        response = await http.get(server.url(scheme="https"))
        assert response.text == "data: secure\n\n"
        assert response.extensions["network_stream"].get_extra_info("ssl_object") is not None
        response = await http.get(server.url(scheme="https"))  # the pooled TLS connection
        assert response.text == "data: secure\n\n"
        assert server.connections == 1

    # A certificate the client does not trust is a connect error, as with the SDKs' own backend.
    async with Server(respond, ssl_context=server_context) as server, client() as http:
        with pytest.raises(httpx2.ConnectError):
            await http.get(server.url(scheme="https"))


async def test_a_stalled_body_times_out_as_a_read_timeout():
    async def respond(writer, path):
        writer.write(CHUNKED + chunk(b"data: first\n\n"))
        await asyncio.sleep(5)
        return False

    async with Server(respond) as server, client(timeout=httpx2.Timeout(5, read=0.3)) as http:
        async with http.stream("GET", server.url()) as response:
            parts = response.aiter_raw()
            assert await parts.__anext__() == b"data: first\n\n"
            with pytest.raises(httpx2.ReadTimeout):
                await parts.__anext__()


async def test_a_refused_connection_is_a_connect_error():
    async with Server(lambda writer, path: None) as server:
        port = server.port
    async with client() as http:
        with pytest.raises(httpx2.ConnectError):
            await http.get(f"http://127.0.0.1:{port}/")


async def test_a_body_cut_short_is_a_read_error():
    async def respond(writer, path):
        writer.write(CHUNKED + chunk(b"data: first\n\n"))
        await writer.drain()
        writer.transport.abort()  # a reset, mid-body
        return False

    async with Server(respond) as server, client() as http:
        with pytest.raises(httpx2.TransportError):
            await http.get(server.url())


async def test_an_idle_pooled_connection_is_checked_without_a_syscall(monkeypatch):
    # The pool checks every idle connection it holds before each request (O(pool) polls).
    async def respond(writer, path):
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        return True

    polls = []
    monkeypatch.setattr(netstream, "is_socket_readable", lambda sock: polls.append(sock) or False)
    async with Server(respond) as server, client() as http:
        for _ in range(3):
            assert (await http.get(server.url())).text == "ok"
        assert server.connections == 1
    assert polls == []


async def test_a_pooled_connection_the_server_closed_is_not_reused():
    async def respond(writer, path):
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        await asyncio.sleep(0.05)
        return False  # then close the kept-alive connection

    async with Server(respond) as server, client() as http:
        assert (await http.get(server.url())).text == "ok"
        await asyncio.sleep(0.3)  # the close has arrived
        assert (await http.get(server.url())).text == "ok"
        assert server.connections == 2


def self_signed(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path
