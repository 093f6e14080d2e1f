"""A rolling restart under load: three gateway processes behind nginx lose nothing.

    .venv/bin/python bench/rolling_restart.py --database-url postgres://... --redis-url redis://...

Starts the mock LLM, `deploy/supervise.py -n 3` (PostgreSQL and Redis from the
arguments; supervise migrates), and nginx (`/usr/sbin/nginx`, a private prefix
and configuration in a temporary folder, listening on a free loopback port)
with deploy/nginx.conf's server block pointed at the three processes. K
sessions then stream paced answers through nginx, one turn after another.
While they do, supervise gets SIGHUP and replaces its processes one at a time.
Each client goes on until the restart is over and its last turn has ended.

A client reconnects at once when its socket closes (a draining process closes
with 1012), asking for the running turn after the last `seq` it saw. A draining
process keeps a message it accepts and another process runs it; a message the
client saw no turn of is sent again, with the same `client_id`, once the socket
is back (answered as a duplicate if it was kept). A refusal (`SESSION_BUSY` with
`"restarting": true`, as older gateways sent) is counted and sent again too. Every turn must
end with `done`, its text whole and in order (`tok1 ` .. `tokN `, seqs without
a gap, `full_response` equal to what arrived); any other error frame, or a turn
that never ends, is a failure (a turn run while its socket was away is checked in the
saved history). Figures: turns, turns that spanned a reconnect, reconnects, refusals,
turns run while their socket was away, the longest gap between two frames of one turn, how long
the restart took, and each process's drain.
"""

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))
from tests.support.ports import consecutive_free_ports, free_port  # noqa: E402 - below the ephemeral range
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
PYTHON = sys.executable


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not reached in {timeout:g} s")
        time.sleep(0.2)


# --- nginx -------------------------------------------------------------------------


def nginx_config(prefix: Path, port: int, upstreams: list[int]) -> str:
    """deploy/nginx.conf's maps, upstreams and server block, on `port`, to `upstreams`."""
    example = (ROOT / "deploy" / "nginx.conf").read_text()
    servers = "".join(f"\n    server 127.0.0.1:{p};" for p in upstreams)
    example = re.sub(r"(\s*server 127\.0\.0\.1:\d+;)+", servers, example)
    example = re.sub(r"listen\s+80;", f"listen 127.0.0.1:{port};", example)
    example = example.replace("/var/log/nginx/", f"{prefix}/")
    user = "user root;\n" if os.geteuid() == 0 else ""
    return f"""{user}worker_processes 1;
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
{example}
}}
"""


class Nginx:
    def __init__(self, upstreams: list[int]):
        self.prefix = Path(tempfile.mkdtemp(prefix="construct-nginx-"))
        self.port = free_port()
        self.conf = self.prefix / "nginx.conf"
        self.conf.write_text(nginx_config(self.prefix, self.port, upstreams))
        self.process = None

    def start(self) -> None:
        command = [NGINX, "-p", str(self.prefix), "-c", str(self.conf), "-g", "daemon off;"]
        check = subprocess.run([*command[:-2], "-t"], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"nginx refused its configuration:\n{check.stderr}")
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(lambda: http_status(f"http://127.0.0.1:{self.port}/health") == 200, 30, "nginx")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGQUIT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        shutil.rmtree(self.prefix, ignore_errors=True)


# --- the gateway ----------------------------------------------------------------------


class Gateway:
    """The mock LLM and `deploy/supervise.py -n N`, as a deployment runs them."""

    def __init__(self, database_url: str, redis_url: str, processes: int, log_path: Path):
        self.base = consecutive_free_ports(processes)
        self.ports = [self.base + i for i in range(processes)]
        self.log_path = log_path
        self.env = {
            **os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url,
            "CONSTRUCT_REQUIRE_PAIRING": "false", "CONSTRUCT_SOCKET_RATE": "off",
            "CONSTRUCT_MESSAGE_RATE": "off", "CONSTRUCT_MAX_SOCKETS_PER_TOKEN": "0",
            "CONSTRUCT_PROVIDER": "openai",
            "CONSTRUCT_API_KEY": "sk-bench-rolling", "CONSTRUCT_MODEL": "mock-model",
            "CONSTRUCT_TRUSTED_PROXIES": "127.0.0.1", "PYTHONUNBUFFERED": "1",
            "DJANGO_SETTINGS_MODULE": "construct_site.settings",
        }
        self.mock = None
        self.supervisor = None

    def start(self) -> None:
        mock_port = free_port()
        self.mock = subprocess.Popen([PYTHON, "manage.py", "mock_llm", "--port", str(mock_port)],
                                     cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = self.mock.stdout.readline()
        if "listening" not in line:
            raise RuntimeError(f"mock_llm did not start: {line}")
        self.env["CONSTRUCT_BASE_URL"] = f"http://127.0.0.1:{mock_port}/v1"
        self._log = open(self.log_path, "wb")
        self.supervisor = subprocess.Popen(
            [PYTHON, "deploy/supervise.py", "-n", str(len(self.ports)), "--base-port", str(self.base),
             "--grace", "10"],
            cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        wait_until(lambda: all(self.ready(port) for port in self.ports), 120, "the gateway's processes")

    def ready(self, port: int) -> bool:
        return http_status(f"http://127.0.0.1:{port}/ready") == 200

    def pids(self) -> list[int | None]:
        return [pid_on(port) for port in self.ports]

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def hangup(self) -> None:
        self.supervisor.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        if self.supervisor is not None and self.supervisor.poll() is None:
            self.supervisor.send_signal(signal.SIGTERM)
            try:
                self.supervisor.wait(40)
            except subprocess.TimeoutExpired:
                os.killpg(self.supervisor.pid, signal.SIGKILL)
                self.supervisor.wait(10)
        if self.supervisor is not None:
            self._log.close()
        if self.mock is not None:
            self.mock.kill()
            self.mock.wait(10)
            self.mock.stdout.close()


def pid_on(port: int) -> int | None:
    """The pid listening on `port` (from /proc/net/tcp and the fd tables)."""
    inode = None
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":
                inode = fields[9]
    if inode is None:
        return None
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return int(pid)
        except OSError:
            continue
    return None


# --- the clients ------------------------------------------------------------------------


@dataclass
class Client:
    """One session streaming paced answers, turn after turn, through nginx."""

    url: str
    session_id: str
    chunks: int
    delay_ms: int
    turns: int = 0
    resumed_turns: int = 0
    reconnects: int = 0
    refusals: int = 0
    ran_away: int = 0  # turns of messages a draining process kept, run while the socket was away
    close_codes: list = field(default_factory=list)
    failures: list = field(default_factory=list)
    max_gap: float = 0.0
    trace: list = field(default_factory=list)  # what happened lately, for a failure's report

    def note(self, what: str) -> None:
        self.trace.append(f"{time.monotonic():.2f} {what}")
        del self.trace[:-12]

    def answer_of(self, content: str) -> str | None:
        """The saved answer to the user message `content` (a turn the client did not watch)."""
        url = f"{self.url.replace('ws://', 'http://', 1)}/api/sessions/{self.session_id}/messages/"
        with urllib.request.urlopen(url, timeout=10) as response:
            messages = json.loads(response.read())["messages"]
        for asked, answered in zip(messages, messages[1:]):
            if asked["role"] == "user" and asked["content"] == content and answered["role"] == "assistant":
                return answered["content"]
        return None

    def ran_while_away(self, answer: str) -> None:
        if answer != self.expected():
            self.failures.append(f"kept message not whole: {answer[:80]!r}")
        self.turns += 1
        self.resumed_turns += 1
        self.ran_away += 1

    def expected(self) -> str:
        return "".join(f"tok{i} " for i in range(1, self.chunks + 1))

    async def run(self, until: asyncio.Event) -> None:
        ws = None
        number = 0
        pending = None  # the message not yet accepted: (client_id, content)
        turn = None  # the turn under way: {"id", "seq", "text", "resumed", "at"}
        try:
            while True:
                if turn is None and pending is None:
                    if until.is_set():
                        return
                    number += 1
                    pending = (f"{self.session_id}-{number}",
                               f"[[chunks={self.chunks}]] [[delay_ms={self.delay_ms}]] n{number}")
                try:
                    if ws is None:
                        ws, start = await self._connect(turn)
                        running = start.get("turn_id") if start.get("state") == "running" else None
                        if turn is not None and turn["id"] is None and running is None:
                            # Accepted by a draining process as the socket went: another process
                            # ran it while the socket was away, or will; else send it again.
                            answer = await asyncio.to_thread(self.answer_of, turn["msg"][1])
                            if answer is not None:
                                self.ran_while_away(answer)
                                turn = None
                                continue
                            pending, turn = turn["msg"], None
                        elif turn is not None:
                            turn["resumed"] = True
                            if running is None or running != (turn["id"] or running):
                                self.failures.append(f"turn {turn['id']} ended while away: {start}")
                                turn = None
                                continue
                        if pending is not None:
                            self.note(f"send {pending[0]}")
                            await ws.send(json.dumps({"type": "message", "content": pending[1],
                                                      "client_id": pending[0]}))
                    elif pending is not None and turn is None:
                        self.note(f"send {pending[0]}")
                        await ws.send(json.dumps({"type": "message", "content": pending[1],
                                                  "client_id": pending[0]}))
                    pending, turn = await self._read(ws, pending, turn)
                except ConnectionClosed as exc:
                    self.close_codes.append(exc.rcvd.code if exc.rcvd else None)
                    self.note(f"closed {exc.rcvd.code if exc.rcvd else None}")
                    ws = None
                except asyncio.TimeoutError:
                    self.failures.append(f"nothing for 60 s: waiting for {pending} / "
                                         f"{turn and {k: v for k, v in turn.items() if k != 'text'}}; "
                                         f"lately: {self.trace}")
                    return
        finally:
            if ws is not None:
                await ws.close()

    async def _connect(self, turn):
        params = f"session_id={self.session_id}"
        if turn is not None and turn["id"] is not None:
            params += f"&turn_id={turn['id']}&last_seq={turn['seq']}"
        deadline = time.monotonic() + 60
        while True:
            try:
                ws = await connect(f"{self.url}/ws/chat?{params}", max_size=None, open_timeout=10)
                start = json.loads(await asyncio.wait_for(ws.recv(), 10))
                self.note(f"start {start.get('state')} {start.get('turn_id')} n={start.get('message_count')}")
                break
            except (OSError, InvalidStatus, ConnectionClosed, asyncio.TimeoutError) as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.session_id}: could not reconnect: {exc!r}") from None
                await asyncio.sleep(0.2)
        if turn is not None or self.turns:
            self.reconnects += 1
        return ws, start

    async def _read(self, ws, pending, turn):
        """Frames until the turn ends or the message is refused; (pending, turn) then."""
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 60))
            kind = frame.get("type")
            if kind not in ("chunk", "agent_event"):
                self.note(f"{kind} {frame.get('client_id') or frame.get('code') or ''}")
            now = time.monotonic()
            if kind == "ack":
                if pending is not None and frame.get("client_id") == pending[0]:
                    if frame.get("duplicate") and turn is None:
                        # Kept by a draining process whose ack went with its socket: it may
                        # have run while the socket was away (else its turn comes).
                        answer = await asyncio.to_thread(self.answer_of, pending[1])
                        if answer is not None:
                            self.ran_while_away(answer)
                            return None, None
                    if turn is None:
                        turn = {"id": None, "seq": 0, "text": [], "resumed": False, "at": now}
                    turn["msg"], pending = pending, None
                continue
            if kind == "error" and frame.get("restarting"):
                self.refusals += 1  # sent again once the socket is back (or in a second)
                if turn is not None and turn["id"] is None:
                    pending, turn = turn["msg"], None
                try:
                    await asyncio.wait_for(ws.recv(), 2)
                except asyncio.TimeoutError:
                    pass
                return pending, turn
            if "turn_id" not in frame:
                if kind == "error":
                    self.failures.append(f"error frame: {frame}")
                continue
            if turn is None:
                # A turn of this session the client did not see accepted: its message was
                # accepted just as the socket dropped (the resend was a duplicate).
                turn = {"id": None, "seq": 0, "text": [], "resumed": True, "at": now, "msg": None}
            if turn["id"] is None:
                turn["id"] = frame["turn_id"]
            if frame["turn_id"] != turn["id"] or frame["seq"] != turn["seq"] + 1:
                self.failures.append(f"out of order: expected {turn['id']}#{turn['seq'] + 1}, got "
                                     f"{frame['turn_id']}#{frame['seq']}")
            turn["seq"] = frame["seq"]
            self.max_gap = max(self.max_gap, now - turn["at"])
            turn["at"] = now
            if kind == "chunk":
                turn["text"].append(frame["content"])
            elif kind == "done":
                text = "".join(turn["text"])
                if text != self.expected() or frame.get("full_response") != text:
                    self.failures.append(f"turn {turn['id']} not whole: {text[:80]!r}...")
                self.turns += 1
                self.resumed_turns += turn["resumed"]
                return None, None
            elif kind in ("error", "stopped"):
                self.failures.append(f"turn {turn['id']} ended with {frame}")
                return None, None


@dataclass
class Result:
    sessions: int
    turns: int
    resumed_turns: int
    reconnects: int
    refusals: int
    ran_away: int
    close_codes: dict
    failures: list
    max_gap_s: float
    restart_s: float
    replaced: bool
    pids_before: list
    pids_after: list


async def load(url: str, gateway: Gateway, sessions: int, chunks: int, delay_ms: int,
               warmup_s: float) -> Result:
    tag = secrets.token_hex(3)
    clients = [Client(url, f"roll-{tag}-{i}", chunks, delay_ms) for i in range(sessions)]
    until = asyncio.Event()
    tasks = [asyncio.create_task(client.run(until)) for client in clients]
    await asyncio.sleep(warmup_s)
    before = gateway.pids()
    started = time.monotonic()
    gateway.hangup()
    await asyncio.to_thread(wait_until, lambda: "rolling restart done" in gateway.output(), 600,
                            "the rolling restart")
    restart_s = time.monotonic() - started
    until.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    after = gateway.pids()
    failures = [f"{c.session_id}: {f}" for c in clients for f in c.failures]
    failures += [f"client crashed: {r!r}" for r in results if isinstance(r, BaseException)]
    codes: dict = {}
    for client in clients:
        for code in client.close_codes:
            codes[str(code)] = codes.get(str(code), 0) + 1
    return Result(
        sessions=sessions, turns=sum(c.turns for c in clients),
        resumed_turns=sum(c.resumed_turns for c in clients),
        reconnects=sum(c.reconnects for c in clients), refusals=sum(c.refusals for c in clients),
        ran_away=sum(c.ran_away for c in clients),
        close_codes=codes, failures=failures, max_gap_s=round(max(c.max_gap for c in clients), 3),
        restart_s=round(restart_s, 1),
        replaced=all(a not in (None, b) for a, b in zip(after, before)),
        pids_before=before, pids_after=after,
    )


def run(database_url: str, redis_url: str, *, sessions=50, chunks=40, delay_ms=100, warmup_s=3.0,
        processes=3, log_dir: Path | None = None) -> Result:
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix="construct-rolling-"))
    gateway = Gateway(database_url, redis_url, processes, log_dir / "supervise.log")
    nginx = None
    try:
        gateway.start()
        nginx = Nginx(gateway.ports)
        nginx.start()
        return asyncio.run(load(f"ws://127.0.0.1:{nginx.port}", gateway, sessions, chunks, delay_ms,
                                warmup_s))
    finally:
        if nginx is not None:
            nginx.stop()
        gateway.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"),
                        help="PostgreSQL (a database the run may write to); default $DATABASE_URL")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"),
                        help="default $REDIS_URL")
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--chunks", type=int, default=40, help="deltas per answer")
    parser.add_argument("--delay-ms", type=int, default=100, help="ms between deltas")
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    if not (args.database_url or "").startswith(("postgres://", "postgresql://")) or not args.redis_url:
        parser.error("needs PostgreSQL (--database-url) and Redis (--redis-url)")
    result = run(args.database_url, args.redis_url, sessions=args.sessions, chunks=args.chunks,
                 delay_ms=args.delay_ms, processes=args.processes)
    if args.json:
        print(json.dumps(result.__dict__, indent=2))
    print(f"sessions {result.sessions}, {args.processes} processes behind nginx, answers of "
          f"{args.chunks} deltas {args.delay_ms} ms apart")
    print(f"rolling restart: {result.restart_s} s; every process replaced: {result.replaced}")
    print(f"turns completed whole: {result.turns} ({result.resumed_turns} across a reconnect)")
    print(f"reconnects: {result.reconnects}; close codes: {result.close_codes}; "
          f"messages refused while draining and sent again: {result.refusals}; "
          f"kept by a draining process and run while their socket was away: {result.ran_away}")
    print(f"longest gap between two frames of a turn: {result.max_gap_s} s")
    print(f"failures: {len(result.failures)}")
    for failure in result.failures[:20]:
        print(f"  {failure}")
    return 0 if not result.failures and result.replaced else 1


if __name__ == "__main__":
    sys.exit(main())
