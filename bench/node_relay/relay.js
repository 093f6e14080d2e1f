// The Node.js relay the gateway is measured against: ws in, the built-in fetch out.
//
// The same protocol subset as bench/baseline_relay.py, against the same mock: on
// connect it sends {"type": "session_start"}; for each {"type": "message", "content"}
// frame it streams an OpenAI Chat Completions reply from the provider with fetch,
// parses each SSE line with JSON.parse, and forwards every text delta as
// {"type": "chunk", "content"}, then {"type": "done", "full_response"}. A socket's
// messages are answered one after the other. No database, no session lock, no
// history: the least a relay can do, on the runtime many chat relays are written in.
//
//     node bench/node_relay/relay.js --port 8766 --base-url http://127.0.0.1:11435/v1
//
// bench/load.py installs `ws` (package-lock.json) with `npm ci` on first use.

"use strict";

const { WebSocketServer } = require("ws");

function option(name, fallback) {
  const index = process.argv.indexOf(name);
  return index > 0 && index + 1 < process.argv.length ? process.argv[index + 1] : fallback;
}

const port = Number(option("--port", "8766"));
const baseUrl = option("--base-url", "http://127.0.0.1:11435/v1").replace(/\/+$/, "");
const model = option("--model", "mock-model");
const PING_MS = 30_000;

async function answer(ws, content) {
  const response = await fetch(baseUrl + "/chat/completions", {
    method: "POST",
    headers: { "content-type": "application/json", authorization: "Bearer sk-bench" },
    body: JSON.stringify({ model, stream: true, messages: [{ role: "user", content }] }),
  });
  if (!response.ok) {
    throw new Error(`provider answered HTTP ${response.status}`);
  }
  const decoder = new TextDecoder();
  const parts = [];
  let pending = "";
  let finished = false;
  for await (const bytes of response.body) {
    pending += decoder.decode(bytes, { stream: true });
    let end;
    while (!finished && (end = pending.indexOf("\n")) >= 0) {
      const line = pending.slice(0, end).replace(/\r$/, "");
      pending = pending.slice(end + 1);
      if (!line.startsWith("data: ")) continue;
      const data = line.slice(6);
      if (data === "[DONE]") {
        finished = true;
        break;
      }
      for (const choice of JSON.parse(data).choices || []) {
        const delta = choice.delta && choice.delta.content;
        if (delta) {
          parts.push(delta);
          ws.send(JSON.stringify({ type: "chunk", content: delta }));
        }
      }
    }
    if (finished) break;
  }
  ws.send(JSON.stringify({ type: "done", full_response: parts.join("") }));
}

const server = new WebSocketServer({ host: "127.0.0.1", port, perMessageDeflate: false, maxPayload: 0 });

server.on("connection", (ws) => {
  let queue = Promise.resolve();
  ws.isAlive = true;
  ws.on("pong", () => {
    ws.isAlive = true;
  });
  ws.on("message", (raw, isBinary) => {
    if (isBinary) return;
    let frame;
    try {
      frame = JSON.parse(raw.toString());
    } catch {
      return;
    }
    if (!frame || frame.type !== "message") return;
    queue = queue
      .then(() => answer(ws, String(frame.content)))
      .catch((error) => {
        if (ws.readyState === ws.OPEN) {
          ws.send(JSON.stringify({ type: "error", code: "PROVIDER_ERROR", message: String(error.message || error) }));
        }
      });
  });
  ws.send(JSON.stringify({ type: "session_start" }));
});

// Pings like the Python relay's websockets server (ping_interval=30).
const pinger = setInterval(() => {
  for (const ws of server.clients) {
    if (!ws.isAlive) {
      ws.terminate();
      continue;
    }
    ws.isAlive = false;
    ws.ping();
  }
}, PING_MS);

server.on("listening", () => {
  console.log(`node relay listening on 127.0.0.1:${server.address().port}`);
});
server.on("close", () => clearInterval(pinger));

for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => process.exit(0));
}
