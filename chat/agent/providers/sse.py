"""Server-sent events read straight from the response bytes.

The SDKs' typed stream objects build a pydantic model per chunk, which costs
about 2.5 times what splitting lines and `json.loads` do. The providers keep the
SDK for connecting, authenticating and retrying, and read the hot stream here.
"""

import json

import orjson


def event_json(data: bytes):
    """One event's JSON. orjson: a seventh of json.loads' time per event (measured); what it
    refuses and json takes (NaN, a lone surrogate) is read by json. Raises ValueError."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


async def sse_data(byte_chunks):
    """Yield the data of each event (bytes, without the `data:` prefix).

    Follows the SSE framing: `data:` lines are joined with newlines and an event
    ends at a blank line. Other fields (`event:`, `id:`, comments) are dropped:
    both wire formats repeat the event type inside the JSON data.
    """
    buffer = b""
    data = []
    try:
        async for chunk in byte_chunks:
            buffer += chunk
            if b"\n" not in chunk:
                continue
            lines = buffer.split(b"\n")
            buffer = lines.pop()
            for line in lines:
                if line.startswith(b"data:"):
                    value = line[5:]
                    if value.startswith(b" "):
                        value = value[1:]
                    data.append(value.rstrip(b"\r"))
                elif not line or line == b"\r":
                    if data:
                        yield data[0] if len(data) == 1 else b"\n".join(data)
                        data = []
    finally:
        # Closed early (a stopped turn): close the byte iterator now, not at GC.
        aclose = getattr(byte_chunks, "aclose", None)
        if aclose is not None:
            await aclose()
    if buffer.startswith(b"data:"):
        data.append(buffer[5:].strip())
    if data:
        # A server that omits the final blank line still meant its last event.
        yield b"\n".join(data)
