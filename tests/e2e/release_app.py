"""An ASGI app that looks at daphne's side of its own open sockets, from inside daphne.

Daphne loads it with ``tests.e2e.release_app:application``; the patches are applied at
import, as construct_site.serving applies them when the gateway starts serving.
``/ws/echo`` answers each message with its length, or to ``frames N SIZE`` with N frames
of SIZE bytes at once; ``/ws/probe`` answers each message with what daphne and autobahn
still hold of every open socket's handshake, the backlog of each port it listens on, and
the connections the reactor watches for room to write, as JSON.
"""

import gc
import json

from construct_site.daphne_tuning import (patch_daphne_handshake_release, patch_daphne_inbox,
                                          patch_daphne_listen_backlog, patch_twisted_writes)

patch_daphne_handshake_release()
patch_daphne_inbox()
patch_daphne_listen_backlog()
patch_twisted_writes()


def sockets_held() -> list[dict]:
    from daphne.ws_protocol import WebSocketProtocol

    held = []
    for sock in gc.get_objects():
        if isinstance(sock, WebSocketProtocol) and sock.state == WebSocketProtocol.STATE_OPEN:
            held.append({
                "producer": type(getattr(sock.transport, "producer", None)).__name__,
                "request": type(sock.request).__name__,
                "path": sock.request.path,
                "http_headers": sock.http_headers,
                "http_request_data": sock.http_request_data is not None,
                "queue": type(sock.application_queue).__name__,
            })
    return held


def requests_alive() -> int:
    from daphne.http_protocol import WebRequest

    gc.collect()
    return sum(1 for thing in gc.get_objects() if isinstance(thing, WebRequest))


def backlogs() -> list[int]:
    from twisted.internet.tcp import Port

    return [port.backlog for port in gc.get_objects() if isinstance(port, Port) and port.connected]


def writers_watched() -> int:
    from twisted.internet import reactor

    return len(reactor.getWriters())


async def application(scope, receive, send):
    if scope["type"] == "http":
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    assert scope["type"] == "websocket"
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while (message := await receive())["type"] == "websocket.receive":
        if scope["path"] == "/ws/probe":
            text = json.dumps({"sockets": sockets_held(), "requests_alive": requests_alive(),
                               "backlogs": backlogs(), "writers": writers_watched()})
        elif (message.get("text") or "").startswith("frames "):
            _, count, size = message["text"].split()
            for n in range(int(count)):
                await send({"type": "websocket.send", "text": f"{n}:".ljust(int(size), "x")})
            continue
        else:
            text = str(len(message.get("text") or message.get("bytes") or ""))
        await send({"type": "websocket.send", "text": text})
    print(f"release_app: {scope['path']} disconnected", flush=True)
