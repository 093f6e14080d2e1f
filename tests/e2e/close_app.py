"""A tiny ASGI app for testing daphne's WebSocket edges.

``/ws/echo`` answers every message with its length (``send N``: with N bytes). Any other path does
what the chat consumer does when the agent cannot start: one text frame,
then ``websocket.close`` with code 1011 (or the code given as the query
string, e.g. ``/ws/x?1008``). Daphne loads it with
``tests.e2e.close_app:application``; the patches are applied at import, as
construct_site.serving applies them when the gateway starts serving.
"""

from construct_site.daphne_compat import patch_daphne_close_codes, patch_daphne_message_limit

# The application limit the chat socket has by default.
APP_FRAME_LIMIT = 1_048_576

patch_daphne_close_codes()
patch_daphne_message_limit(APP_FRAME_LIMIT)

CLEAN_CLOSE_MARK = "close_app: closed cleanly with"
ERROR_FRAME = '{"type": "error", "code": "AGENT_INIT_FAILED", "message": "test"}'


async def application(scope, receive, send):
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            pass
        return
    if scope["type"] == "http":
        await receive()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    assert scope["type"] == "websocket"
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    if scope["path"] == "/ws/echo":
        while (message := await receive())["type"] == "websocket.receive":
            text = message.get("text") or ""
            if text.startswith("send "):  # a message of the server's as large as asked
                await send({"type": "websocket.send", "text": "x" * int(text.split()[1])})
                continue
            size = len(text or message.get("bytes") or "")
            await send({"type": "websocket.send", "text": str(size)})
        return
    await send({"type": "websocket.send", "text": ERROR_FRAME})
    # The code to close with comes in the query string; 1011 by default.
    code = int(scope["query_string"].decode() or 1011)
    await send({"type": "websocket.close", "code": code})
    # Reached only if the close above did not raise inside daphne.
    while (await receive())["type"] != "websocket.disconnect":
        pass
    print(f"{CLEAN_CLOSE_MARK} {code}", flush=True)
