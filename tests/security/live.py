"""Helpers for the tests that run the real server: read its database, speak raw WebSocket."""

import base64
import os
import socket
import sqlite3
import struct


def db_rows(database_url, sql, params=()):
    """Rows of a query on a server's own database (SQLite file or PostgreSQL), `?` placeholders."""
    if database_url.startswith("sqlite:///"):
        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as conn:
            return conn.execute(sql, params).fetchall()
    import psycopg

    with psycopg.connect(database_url) as conn:
        return conn.execute(sql.replace("?", "%s"), params).fetchall()


def raw_upgrade(port, path, headers=(), timeout=10.0):
    """Complete a WebSocket handshake by hand; return (sock, status line, bytes read past it)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13",
             *headers, "", ""]
    sock.sendall("\r\n".join(lines).encode())
    response = b""
    while b"\r\n\r\n" not in response:
        data = sock.recv(4096)
        if not data:
            break
        response += data
    head, _, rest = response.partition(b"\r\n\r\n")
    return sock, head.split(b"\r\n", 1)[0].decode(), rest


def client_frame(payload: bytes, opcode=0x1) -> bytes:
    """One masked, final client frame (RFC 6455 5.2) of any opcode, payload sent as is."""
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


def server_frames(data: bytes):
    """Parse unmasked server frames from `data`: a list of (opcode, payload); a cut-off tail is dropped."""
    frames, i = [], 0
    while i + 2 <= len(data):
        opcode, length = data[i] & 0x0F, data[i + 1] & 0x7F
        i += 2
        if length == 126:
            if i + 2 > len(data):
                break
            (length,) = struct.unpack("!H", data[i:i + 2])
            i += 2
        elif length == 127:
            if i + 8 > len(data):
                break
            (length,) = struct.unpack("!Q", data[i:i + 8])
            i += 8
        if i + length > len(data):
            break
        frames.append((opcode, data[i:i + length]))
        i += length
    return frames
