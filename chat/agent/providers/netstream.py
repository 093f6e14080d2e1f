"""The providers' sockets on plain asyncio: httpcore2's network backend without anyio.

A model streams each delta in its own network read, 20 to 100 a second per turn. The SDKs'
HTTP stack reads through anyio, which for every read enters a cancel scope for the read's
timeout and asks the event loop to watch the socket, then to stop watching it once the
read is done (two `epoll_ctl` calls and the selector's bookkeeping each time). Here a
connection's protocol keeps the socket watched and buffers what arrives; a read takes what
is buffered, and waits (with a timer for its timeout) only when nothing is. Reading pauses
only when a reader falls behind by more than HIGH_WATER bytes, and resumes below LOW_WATER.

`NetworkBackend` is given to the SDK clients' connection pools (`with_network_backend`); the
exceptions are httpcore2's own, as its anyio backend raises them, so the SDKs and
`chat.agent.providers.failures` see the same failures.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import ssl
from typing import Any, Iterable

import httpcore2
from httpcore2 import AsyncNetworkBackend, AsyncNetworkStream
from httpcore2._utils import is_socket_readable

HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024
# Between a connection's addresses (IPv6 and IPv4), as anyio's connect_tcp does (RFC 8305).
HAPPY_EYEBALLS_DELAY = 0.25


class _Protocol(asyncio.Protocol):
    """One connection: what arrived and is not read yet, and who waits for it."""

    def __init__(self):
        self.transport: asyncio.Transport | None = None
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.reading_paused = False
        self.eof = False
        self.error: BaseException | None = None
        self.closed = False
        self.reader: asyncio.Future | None = None
        self.writable: asyncio.Future | None = None  # set while the transport asks writers to wait

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered > HIGH_WATER and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()
        self._wake_reader()

    def eof_received(self):
        self.eof = True
        self._wake_reader()
        return None  # the transport closes itself; what is buffered is still read

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.eof = True
        if exc is not None and self.error is None:
            self.error = exc
        self._wake_reader()
        self.resume_writing()

    def pause_writing(self) -> None:
        if self.writable is None:
            self.writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        writable, self.writable = self.writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    def _wake_reader(self) -> None:
        reader = self.reader
        if reader is not None and not reader.done():
            reader.set_result(None)


def _expire(future: asyncio.Future) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


async def _wait(future: asyncio.Future, timeout: float | None) -> None:
    """Wait for `future`; TimeoutError after `timeout` seconds (None: no limit)."""
    if timeout is None:
        await future
        return
    timer = asyncio.get_running_loop().call_later(timeout, _expire, future)
    try:
        await future
    finally:
        timer.cancel()


class NetworkStream(AsyncNetworkStream):
    def __init__(self, protocol: _Protocol):
        self._protocol = protocol

    @property
    def _transport(self) -> asyncio.Transport:
        return self._protocol.transport  # after start_tls, the TLS transport

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        protocol = self._protocol
        if not protocol.chunks:
            if protocol.eof:
                if protocol.error is not None:
                    raise httpcore2.ReadError(str(protocol.error) or type(protocol.error).__name__)
                return b""
            if protocol.reader is not None:
                raise RuntimeError("another read is waiting on this connection")
            protocol.reader = asyncio.get_running_loop().create_future()
            try:
                await _wait(protocol.reader, timeout)
            except TimeoutError:
                raise httpcore2.ReadTimeout("timed out reading from the provider") from None
            finally:
                protocol.reader = None
            return await self.read(max_bytes, timeout)
        chunk = protocol.chunks.popleft()
        if len(chunk) > max_bytes:
            chunk, rest = chunk[:max_bytes], chunk[max_bytes:]
            protocol.chunks.appendleft(rest)
        protocol.buffered -= len(chunk)
        if protocol.reading_paused and protocol.buffered < LOW_WATER and not protocol.closed:
            protocol.reading_paused = False
            self._transport.resume_reading()
        return chunk

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        protocol = self._protocol
        if protocol.closed or self._transport.is_closing():
            raise httpcore2.WriteError("the connection to the provider is closed")
        self._transport.write(buffer)
        if protocol.writable is not None:
            try:
                await _wait(protocol.writable, timeout)
            except TimeoutError:
                raise httpcore2.WriteTimeout("timed out writing to the provider") from None
            if protocol.closed and protocol.error is not None:
                raise httpcore2.WriteError(str(protocol.error))

    async def aclose(self) -> None:
        self._transport.close()

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            transport = await asyncio.wait_for(
                loop.start_tls(self._transport, self._protocol, ssl_context, server_hostname=server_hostname),
                timeout,
            )
        except (asyncio.TimeoutError, TimeoutError):
            self._transport.abort()
            raise httpcore2.ConnectTimeout("timed out in the TLS handshake with the provider") from None
        except (OSError, ssl.SSLError, ConnectionError) as exc:
            self._transport.abort()
            raise httpcore2.ConnectError(str(exc)) from exc
        self._protocol.transport = transport
        return NetworkStream(self._protocol)

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":
            return self._transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._transport.get_extra_info("sockname")
        if info == "server_addr":
            return self._transport.get_extra_info("peername")
        if info == "socket":
            return self._transport.get_extra_info("socket")
        if info == "is_readable":
            # The pool asks this of every idle connection it holds, for every request. While
            # reading is on, whatever the server sent (a close included) is read as the loop
            # sees it, so the protocol knows without a syscall; paused, the kernel may hold more.
            protocol = self._protocol
            if protocol.chunks or protocol.eof:
                return True
            return protocol.reading_paused and is_socket_readable(self._transport.get_extra_info("socket"))
        return None


class NetworkBackend(AsyncNetworkBackend):
    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable | None = None) -> AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        local = (local_address, 0) if local_address else None
        connecting = loop.create_connection(_Protocol, host, port, local_addr=local,
                                            happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY)
        return await self._connected(connecting, timeout, socket_options)

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable | None = None) -> AsyncNetworkStream:
        connecting = asyncio.get_running_loop().create_unix_connection(_Protocol, path)
        return await self._connected(connecting, timeout, socket_options)

    async def _connected(self, connecting, timeout, socket_options) -> NetworkStream:
        try:
            transport, protocol = await asyncio.wait_for(connecting, timeout)
        except (asyncio.TimeoutError, TimeoutError):
            raise httpcore2.ConnectTimeout("timed out connecting to the provider") from None
        except OSError as exc:
            raise httpcore2.ConnectError(str(exc)) from exc
        sock: socket.socket | None = transport.get_extra_info("socket")
        for option in socket_options or ():
            sock.setsockopt(*option)
        return NetworkStream(protocol)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def with_network_backend(client):
    """`client` (an SDK's httpx2.AsyncClient) with its connection pools on NetworkBackend: its
    own, and those of the proxies it took from the environment. Returns it.

    httpx2 builds its pools with no way to name a backend, so the pools' attribute is set
    (tests/providers/test_netstream.py checks that it took, for both providers)."""
    backend = NetworkBackend()
    for transport in (client._transport, *client._mounts.values()):
        pool = getattr(transport, "_pool", None)
        if pool is not None and hasattr(pool, "_network_backend"):
            pool._network_backend = backend
    return client
