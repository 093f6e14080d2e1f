"""The plain relay the gateway is measured against: websockets in, httpx + json out.

For each `{"type": "message", "content": ...}` frame it streams an OpenAI
Chat Completions reply from the provider with httpx, parses each SSE line with
json, and forwards every text delta as `{"type": "chunk", "content": ...}`,
then `{"type": "done", "full_response": ...}`. No SDK objects, no Django, no
database, no session lock, no history: the least a relay can do.

    python bench/baseline_relay.py --port 8765 --base-url http://127.0.0.1:11435/v1
"""

import argparse
import asyncio
import json

import httpx
from websockets.asyncio.server import serve


def dumps(frame: dict) -> str:
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":"))


async def relay(ws, client: httpx.AsyncClient, base_url: str, model: str) -> None:
    await ws.send(dumps({"type": "session_start"}))
    async for raw in ws:
        frame = json.loads(raw)
        if frame.get("type") != "message":
            continue
        body = {
            "model": model,
            "stream": True,
            "messages": [{"role": "user", "content": frame["content"]}],
        }
        parts = []
        async with client.stream("POST", base_url + "/chat/completions", json=body) as response:
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    break
                choices = json.loads(data).get("choices") or ()
                for choice in choices:
                    delta = (choice.get("delta") or {}).get("content")
                    if delta:
                        parts.append(delta)
                        await ws.send(dumps({"type": "chunk", "content": delta}))
        await ws.send(dumps({"type": "done", "full_response": "".join(parts)}))


async def main(port: int, base_url: str, model: str) -> None:
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
    async with httpx.AsyncClient(timeout=120, limits=limits,
                                 headers={"Authorization": "Bearer sk-bench"}) as client:
        async with serve(lambda ws: relay(ws, client, base_url, model), "127.0.0.1", port,
                         compression=None, max_size=None, ping_interval=30):
            print(f"relay listening on 127.0.0.1:{port}", flush=True)
            await asyncio.Future()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--base-url", default="http://127.0.0.1:11435/v1")
    parser.add_argument("--model", default="mock-model")
    args = parser.parse_args()
    asyncio.run(main(args.port, args.base_url.rstrip("/"), args.model))
