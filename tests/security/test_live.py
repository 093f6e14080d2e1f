"""The defences on the wire, against the real server: what in-process tests cannot see.

Daphne's access log, its pings, autobahn's frame checks, the Origin and
X-Forwarded-For headers as a real client sends them, revocation from another
process, body limits on a real HTTP request.
"""

import asyncio
import http.client
import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.e2e.test_chat_e2e import is_operator_event
from tests.e2e.conftest import FAKE_KEY, gateway_env, pair
from tests.security.live import client_frame, db_rows, raw_upgrade, server_frames
from tests.support.daphne import REPO_ROOT, server_env

pytestmark = pytest.mark.e2e


def ws_url(server, session_id="live", **params):
    query = "&".join(f"{k}={v}" for k, v in {"session_id": session_id, **params}.items())
    return f"{server.ws_url}/ws/chat?{query}"


async def recv_json(ws, timeout=15):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def until(ws, types=("done", "error", "stopped"), timeout=20):
    """Every frame up to the first of `types`; operator events (`agent_event`) left out unless asked."""
    frames = []
    while True:
        frame = await recv_json(ws, timeout)
        if is_operator_event(frame) and "agent_event" not in types:
            continue
        frames.append(frame)
        if frames[-1]["type"] in types:
            return frames


@pytest.fixture
def live(daphne_factory, mock_llm_process):
    server = daphne_factory(env=gateway_env(mock_llm_process))
    return server, pair(server)


# --- Logs --------------------------------------------------------------------------------


async def test_tokens_and_the_key_stay_out_of_the_server_output(live):
    server, token = live
    async with connect(ws_url(server, token=token)) as ws:
        await recv_json(ws)
        for content in ("[[echo_key]]", "[[fail=401]]", "[[echo_prompt]] my token is elsewhere"):
            await ws.send(json.dumps({"type": "message", "content": content}))
            frames = await until(ws)
            assert FAKE_KEY not in json.dumps(frames)
    with pytest.raises(InvalidStatus):
        async with connect(ws_url(server, token=token[:-4] + "AAAA")):
            pass
    for path in (f"/health?token={token}", f"/api/sessions/?x=1&token={token}"):
        _get(server, path).close()
    assert server.wait_for_output("GET /api/sessions/?x=1&token=[REDACTED]"), server.output()[-3000:]
    output = server.output()
    assert "GET /health?token=[REDACTED]" in output
    assert "WSCONNECT /ws/chat" in output  # the access log is on, and saw the socket
    assert token not in output and token[:-4] not in output
    assert FAKE_KEY not in output


async def test_the_access_log_names_the_client_a_trusted_proxy_forwards_and_only_then(
        daphne_factory, mock_llm_process):
    # Loopback 127.0.0.1 is a trusted proxy here; 127.0.0.2 (loopback too) is not.
    server = daphne_factory(env=gateway_env(mock_llm_process, CONSTRUCT_TRUSTED_PROXIES="127.0.0.1"))
    token = pair(server)
    for source, forwarded, probe in (("127.0.0.1", "203.0.113.7", "trusted"),
                                     ("127.0.0.1", "198.18.0.66, 203.0.113.9", "chain"),
                                     ("127.0.0.2", "198.51.100.9", "untrusted")):
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10,
                                                source_address=(source, 0))
        connection.request("GET", f"/health?probe={probe}&token={token}",
                           headers={"X-Forwarded-For": forwarded})
        assert connection.getresponse().status == 200
        connection.close()
    async with connect(ws_url(server, session_id="xff", token=token),
                       additional_headers={"X-Forwarded-For": "203.0.113.8"}) as ws:
        assert (await recv_json(ws))["type"] == "session_start"
    assert server.wait_for_output("WSDISCONNECT /ws/chat")
    lines = [line for line in server.output().splitlines() if '"GET /health?probe=' in line
             or "WSCONNECT /ws/chat" in line]
    by_probe = {probe: next(line for line in lines if f"probe={probe}&" in line)
                for probe in ("trusted", "chain", "untrusted")}
    assert by_probe["trusted"].startswith("203.0.113.7:0 - - [")
    assert '"GET /health?probe=trusted&token=[REDACTED]" 200' in by_probe["trusted"]
    # The right-most address no trusted proxy vouches for: the left of it may be forged.
    assert by_probe["chain"].startswith("203.0.113.9:0 - - [")
    # A peer that is not trusted is itself the client: what it says is not believed.
    assert by_probe["untrusted"].startswith("127.0.0.2:")
    assert "198.51.100.9" not in server.output()
    assert [line.split(" ", 1)[0] for line in lines if "WSCONNECT" in line] == ["203.0.113.8:0"]
    assert token not in server.output()


def _get(server, path):
    request = urllib.request.Request(server.url + path)
    try:
        return urllib.request.urlopen(request, timeout=10)
    except urllib.error.HTTPError as exc:  # 401 without a bearer header: logged all the same
        return exc


async def test_pairing_codes_stay_out_of_the_server_output(live):
    server, _token = live
    code = subprocess.run(
        [sys.executable, "manage.py", "pairing_code"], cwd=REPO_ROOT, env=server_env(server.env),
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=True,
    ).stdout.strip().splitlines()[-1]
    wrong = "%06d" % ((int(code) + 1) % 1_000_000)
    for attempt in (wrong, code):
        request = urllib.request.Request(server.url + "/pair", method="POST", data=b"",
                                         headers={"X-Pairing-Code": attempt})
        try:
            urllib.request.urlopen(request, timeout=10).read()
        except urllib.error.HTTPError as exc:
            assert exc.code == 403
    assert server.wait_for_output("POST /pair")
    output = server.output()
    assert code not in output and wrong not in output


# --- Pings --------------------------------------------------------------------------------


async def test_a_client_that_stops_answering_pings_is_closed(daphne_factory, mock_llm_process):
    server = daphne_factory(env=gateway_env(mock_llm_process),
                            extra_args=["--ping-interval", "1", "--ping-timeout", "2"])
    token = pair(server)

    def dead_client():
        """Completes the handshake and reads, but never writes: so never answers a ping."""
        sock, status, data = raw_upgrade(server.port, f"/ws/chat?session_id=dead&token={token}")
        assert status.startswith("HTTP/1.1 101"), status
        started = time.monotonic()
        sock.settimeout(15)
        try:
            while True:  # everything the server sends, up to its dropping the connection
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:  # autobahn aborts a connection whose ping went unanswered
            pass
        finally:
            sock.close()
        return server_frames(data), time.monotonic() - started

    async def live_client():
        async with connect(ws_url(server, session_id="alive", token=token)) as ws:
            await recv_json(ws)
            await asyncio.sleep(6.5)  # the same silence; websockets answers the pings
            await ws.send(json.dumps({"type": "message", "content": "still here"}))
            return (await until(ws))[-1]

    (dead, lasted), last = await asyncio.gather(asyncio.to_thread(dead_client), live_client())
    opcodes = [opcode for opcode, _ in dead]
    assert lasted < 12  # ping interval 1 s + timeout 2 s, checked every couple of seconds
    # The first text frame is session_start (a ping may come before it on a busy machine).
    texts = [payload for opcode, payload in dead if opcode == 0x1]
    assert texts and json.loads(texts[0])["type"] == "session_start"
    assert 0x9 in opcodes  # pinged
    assert last["type"] == "done"  # a client that answers is left alone


# --- Frames autobahn itself refuses ---------------------------------------------------


async def test_invalid_utf8_text_frame_fails_the_connection(live):
    """RFC 6455 8.1: a text frame that is not UTF-8 fails the connection. Autobahn does so by
    dropping TCP at once (its failByDrop default), without a 1007 close frame; the server and
    the session are unharmed."""
    server, token = live
    sock, status, data = raw_upgrade(server.port, f"/ws/chat?session_id=utf8&token={token}")
    assert status.startswith("HTTP/1.1 101")
    sock.settimeout(10)
    while not server_frames(data):
        data += sock.recv(65536)
    assert json.loads(server_frames(data)[0][1])["type"] == "session_start"
    sock.sendall(client_frame(b'{"type":"message","content":"\xff\xfe"}'))
    ended = False
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                ended = True
                break
            data += chunk
    except ConnectionResetError:
        ended = True
    finally:
        sock.close()
    assert ended
    assert all(opcode != 0x1 for opcode, _ in server_frames(data)[1:])  # no reply to that frame
    async with connect(ws_url(server, session_id="utf8", token=token)) as ws:
        assert (await recv_json(ws))["message_count"] == 0
        await ws.send(json.dumps({"type": "message", "content": "valid after all"}))
        assert (await until(ws))[-1]["type"] == "done"


# --- Origin, X-Forwarded-For, revocation ---------------------------------------------


async def test_origin_over_the_wire(live):
    server, token = live
    with pytest.raises(InvalidStatus) as refused:
        async with connect(ws_url(server, token=token), origin="https://evil.example"):
            pass
    assert refused.value.response.status_code == 403
    async with connect(ws_url(server, token=token), origin=server.url) as ws:
        assert (await recv_json(ws))["type"] == "session_start"
    rows = db_rows(server.env["DATABASE_URL"],
                   "SELECT detail FROM sessions_app_auditevent WHERE kind = 'socket_refused'")
    assert [json.loads(detail) if isinstance(detail, str) else detail for (detail,) in rows] == [
        {"reason": "origin not allowed", "origin": "https://evil.example"}]


async def test_forwarded_for_is_believed_only_from_trusted_proxies(daphne_factory, mock_llm_process):
    untrusted = daphne_factory(env=gateway_env(mock_llm_process))
    token = pair(untrusted)
    trusted = daphne_factory(env=gateway_env(mock_llm_process, CONSTRUCT_TRUSTED_PROXIES="127.0.0.1"))
    for server, session in ((untrusted, "untrusted"), (trusted, "trusted")):
        async with connect(ws_url(server, session_id=session, token=token),
                           additional_headers={"X-Forwarded-For": "198.51.100.7"}) as ws:
            await recv_json(ws)
    query = "SELECT client, detail FROM sessions_app_auditevent WHERE kind = 'socket_connect'"
    deadline = time.monotonic() + 10
    while len(rows := db_rows(daphne_factory.database_url, query)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)  # the entry is written just after session_start goes out
    clients = {(json.loads(d) if isinstance(d, str) else d)["session_id"]: c for c, d in rows}
    assert clients == {"untrusted": "127.0.0.1", "trusted": "198.51.100.7"}


async def test_revocation_from_another_process_closes_the_socket(live):
    server, token = live
    (device_id,) = db_rows(server.env["DATABASE_URL"], "SELECT id FROM sessions_app_paireddevice")[0]
    async with connect(ws_url(server, token=token)) as ws:
        await recv_json(ws)
        subprocess.run(
            [sys.executable, "manage.py", "shell", "-c",
             f"from sessions_app.pairing import device_revoke; device_revoke(device_id={device_id})"],
            cwd=REPO_ROOT, env=server_env(server.env), check=True, timeout=60,
            stdin=subprocess.DEVNULL, capture_output=True,
        )
        if not os.environ.get("REDIS_URL"):
            # No shared layer: the other process cannot reach this socket; its next message can't pass.
            await ws.send(json.dumps({"type": "message", "content": "hello?"}))
        frame = await recv_json(ws)
        assert frame == {"type": "error", "code": "AUTH_ERROR",
                         "message": "Token revoked: pair this device again"}
        with pytest.raises(ConnectionClosed):
            await recv_json(ws)
    assert ws.close_code == 4401
    with pytest.raises(InvalidStatus):
        async with connect(ws_url(server, token=token)):
            pass


# --- Request bodies ---------------------------------------------------------------


def test_body_limits_on_the_wire(live):
    server, token = live
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    big = b'{"pad":"' + b"x" * (2 * 1024 * 1024) + b'"}'

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("POST", "/api/channel-events/", body=big, headers=headers)
    response = conn.getresponse()
    assert response.status == 413
    assert json.loads(response.read())["error"].startswith("Request body too large")
    conn.close()

    # Chunked, so no Content-Length to refuse it on: still no 500, still JSON.
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("POST", "/api/channel-events/", body=iter([big[:1000], big[1000:]]),
                 headers=headers, encode_chunked=True)
    response = conn.getresponse()
    assert response.status in (400, 413)
    assert "error" in json.loads(response.read())
    conn.close()
