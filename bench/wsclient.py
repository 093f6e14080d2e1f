"""A lean WebSocket client for the load generator: one asyncio Protocol per socket.

The client shares two cores with the server, the mock LLM and the relays, and it
measures latency, so it takes the arrival time of every read in `data_received`,
once, before any task switch: the client's own queueing is not counted as the
server's latency. It needs no task per socket (10,000 idle sockets cost little)
and parses frames straight out of the read buffer. Against the websockets client
(measured here, 200 sockets on the Node relay) it costs 4-6 against 7 us per frame
when frames arrive in bursts, and 21-34 against 23-38 us when each frame is its own
read: with one frame per read, asyncio's own cost per read dominates either way.

It speaks only what the benchmark needs: the opening handshake (with extra
headers), text frames (fragmented or not), ping (answered with pong), close; no
extensions, no compression.
"""

import asyncio
import base64
import os
import time
from urllib.parse import urlsplit

CONNECT_TIMEOUT = 60.0


class HandshakeError(Exception):
    """The server did not switch protocols."""


class WebSocket(asyncio.Protocol):
    """A client socket. `on_text(text, now)` is called for every text message once greeted.

    `greeted` resolves with the first text message (`session_start`, or the relays'
    greeting); messages after it go to `on_text`.
    """

    def __init__(self, host: str, path: str, headers: dict):
        loop = asyncio.get_running_loop()
        self._request = self._handshake(host, path, headers)
        self.transport = None
        self.opened = loop.create_future()
        self.greeted = loop.create_future()
        self.closed = loop.create_future()
        self.on_text = None
        self.open_at = None  # time.monotonic() of the 101 answer
        self._buffer = bytearray()
        self._upgraded = False
        self._fragments: list[bytes] = []

    @staticmethod
    def _handshake(host, path, headers) -> bytes:
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Upgrade: websocket", "Connection: Upgrade",
                 f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    # --- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport
        transport.write(self._request)

    def data_received(self, data):
        now = time.time()
        buffer = self._buffer
        buffer += data
        if not self._upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buffer[:buffer.find(b"\r\n")])
            if b" 101 " not in status + b" ":
                self._fail(HandshakeError(status.decode(errors="replace")))
                return
            del buffer[:end + 4]
            self._upgraded = True
            self.open_at = time.monotonic()
            self.opened.set_result(None)
        offset, size = 0, len(buffer)
        while size - offset >= 2:
            first, second = buffer[offset], buffer[offset + 1]
            length, head = second & 0x7F, 2
            if length == 126:
                if size - offset < 4:
                    break
                length, head = int.from_bytes(buffer[offset + 2:offset + 4], "big"), 4
            elif length == 127:
                if size - offset < 10:
                    break
                length, head = int.from_bytes(buffer[offset + 2:offset + 10], "big"), 10
            if second & 0x80:  # a masked server frame is a protocol error; never seen here
                head += 4
            if size - offset < head + length:
                break
            payload = bytes(buffer[offset + head:offset + head + length])
            offset += head + length
            self._frame(first & 0x80, first & 0x0F, payload, now)
        if offset:
            del buffer[:offset]

    def connection_lost(self, exc):
        self._fail(exc or ConnectionError("connection closed"))
        if not self.closed.done():
            self.closed.set_result(None)

    # --- frames ----------------------------------------------------------------------

    def _frame(self, fin, opcode, payload, now):
        if opcode in (1, 0):  # text, continuation (binary frames are not sent to us)
            if not fin:
                self._fragments.append(payload)
                return
            if self._fragments:
                payload = b"".join(self._fragments) + payload
                self._fragments.clear()
            text = payload.decode()
            if not self.greeted.done():
                self.greeted.set_result(text)
            elif self.on_text is not None:
                self.on_text(text, now)
        elif opcode == 9:
            self._send(0xA, payload)
        elif opcode == 8:
            if self.transport is not None and not self.transport.is_closing():
                self._send(0x8, payload[:2])
                self.transport.close()

    def _send(self, opcode, payload: bytes):
        mask = os.urandom(4)
        length = len(payload)
        if length < 126:
            head = bytes((0x80 | opcode, 0x80 | length))
        elif length < 65536:
            head = bytes((0x80 | opcode, 0x80 | 126)) + length.to_bytes(2, "big")
        else:
            head = bytes((0x80 | opcode, 0x80 | 127)) + length.to_bytes(8, "big")
        if length:
            key = int.from_bytes((mask * (length // 4 + 1))[:length], "big")
            payload = (int.from_bytes(payload, "big") ^ key).to_bytes(length, "big")
        self.transport.write(head + mask + payload)

    def _fail(self, exc):
        for future in (self.opened, self.greeted):
            if not future.done():
                future.set_exception(exc)
                future.exception()  # retrieved: an unawaited failure is not an error here

    # --- API -------------------------------------------------------------------------

    def send_text(self, text: str):
        if self.transport is not None and not self.transport.is_closing():
            self._send(0x1, text.encode())

    def close(self):
        """Send a close frame and drop the connection (the server need not answer)."""
        if self.transport is not None and not self.transport.is_closing():
            self._send(0x8, (1000).to_bytes(2, "big"))
            self.transport.close()


async def open_socket(url: str, headers: dict | None = None, timeout: float = CONNECT_TIMEOUT) -> WebSocket:
    """Connect, upgrade and wait for the server's first text message (kept in `greeted`)."""
    parts = urlsplit(url)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    loop = asyncio.get_running_loop()
    protocol = WebSocket(parts.netloc, path, headers or {})
    try:
        async with asyncio.timeout(timeout):
            await loop.create_connection(lambda: protocol, parts.hostname, parts.port or 80)
            await protocol.greeted
    except BaseException:
        if protocol.transport is not None:
            protocol.transport.abort()
        raise
    return protocol
