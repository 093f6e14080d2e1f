"""Load benchmark: the real gateway against a plain relay, on one machine, over loopback.

Starts the mock LLM (`manage.py mock_llm`), the plain relay (bench/baseline_relay.py)
and the gateway (daphne, as deployed: pairing on, a paired token), then measures:

  stream   K sessions at once, each sending one message answered in N stamped
           chunks ([[chunks=N]] [[stamp]]) as fast as the mock can write them:
           chunks/s over the whole run and server CPU per chunk. At saturation
           every chunk also waits in socket buffers, so the added latency of a
           chunk (client receive time minus the time the mock wrote it) is
           measured in a paced round as well: the same K sessions with the
           chunks D ms apart ([[delay_ms=D]]), a load the machine can carry.
           Run against the relay, the gateway on the in-process layer, and the
           gateway with REDIS_URL set.
  resume   connect-to-session_start time of a session with a long history
           (messages written straight into the database).
  idle     server memory per idle socket: RSS growth over M open sockets / M.

Figures are printed as a Markdown table, with the gateway's as ratios to the
relay's (and the Redis layer's to the in-process one's). Everything listens on
127.0.0.1 only; each phase is bounded in time.

    python bench/load.py                      # K=100, N=400, 3 rounds, 2,000 idle sockets
    python bench/load.py --sessions 20 --rounds 1 --idle 200 --history 1000   # a quick look
    python bench/load.py --database-url postgres://... --redis-url redis://...
"""

import argparse
import asyncio
import contextlib
import json
import os
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from websockets.asyncio.client import connect

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
TERMINAL = ("done", "error", "stopped")
CONNECT_CONCURRENCY = 100
STEADY_AFTER = 10
# Processes whose CPU time each round reports besides the server's (the mock LLM).
OBSERVED: list = []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def raise_fd_limit(wanted: int) -> int:
    """Lift the soft limit on open files towards `wanted` (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --- Processes -------------------------------------------------------------------------


class Process:
    """A server subprocess with its output in a file; RSS and CPU read from /proc."""

    def __init__(self, name, command, env, workdir):
        self.name = name
        self.log_path = Path(workdir) / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.popen = subprocess.Popen(
            command, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )

    @property
    def pid(self):
        return self.popen.pid

    def wait_http(self, url, timeout=60.0):
        deadline = time.monotonic() + timeout
        while True:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.output()}")
            try:
                with urllib.request.urlopen(url, timeout=2):
                    return
            except urllib.error.HTTPError:
                return  # it answers
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not answer {url} in {timeout} s:\n{self.output()}")
            time.sleep(0.1)

    def wait_port(self, port, timeout=30.0):
        deadline = time.monotonic() + timeout
        while True:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.output()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not listen on {port}:\n{self.output()}")
            time.sleep(0.1)

    def rss(self) -> int:
        """Resident memory in bytes."""
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self):
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)
        self._log.close()


def base_env(extra=None) -> dict:
    env = dict(os.environ)
    env.update({"DJANGO_SETTINGS_MODULE": "construct_site.settings", "PYTHONUNBUFFERED": "1"})
    for name, value in (extra or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = str(value)
    return env


def start_mock(workdir) -> tuple[Process, str]:
    port = free_port()
    proc = Process("mock_llm", [PY, "manage.py", "mock_llm", "--port", str(port)], base_env(), workdir)
    proc.wait_port(port)
    return proc, f"http://127.0.0.1:{port}/v1"


def start_relay(workdir, mock_url) -> tuple[Process, str]:
    port = free_port()
    proc = Process("relay", [PY, str(REPO / "bench" / "baseline_relay.py"), "--port", str(port),
                             "--base-url", mock_url], base_env(), workdir)
    proc.wait_port(port)
    return proc, f"ws://127.0.0.1:{port}/"


def gateway_env(mock_url, database_url, redis_url, workdir, extra=()) -> dict:
    return base_env({
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "CONSTRUCT_PROVIDER": "openai",
        "CONSTRUCT_BASE_URL": mock_url,
        "CONSTRUCT_API_KEY": "sk-bench-" + secrets.token_hex(8),
        "CONSTRUCT_MODEL": "mock-model",
        "CONSTRUCT_REQUIRE_PAIRING": "true",
        "CONSTRUCT_WORKSPACE": str(Path(workdir) / "workspace"),
        # One client address opens thousands of sockets here: that is the load, not an attack.
        "CONSTRUCT_MESSAGE_RATE": "off",
        "CONSTRUCT_SOCKET_RATE": "off",
        "CONSTRUCT_MAX_SOCKETS_PER_TOKEN": "0",
        "OPENAI_API_KEY": None,
        "ANTHROPIC_API_KEY": None,
        **dict(item.split("=", 1) for item in extra),
    })


def manage(env, *args, timeout=300) -> str:
    result = subprocess.run([PY, "manage.py", *args], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def start_gateway(name, env, workdir) -> tuple[Process, str, str]:
    port = free_port()
    proc = Process(name, [PY, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                          "construct_site.asgi:application"], env, workdir)
    proc.wait_http(f"http://127.0.0.1:{port}/health")
    log(f"{name}: pid {proc.pid}, port {port}")
    return proc, f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/ws/chat"


def pair(env, http_url) -> str:
    code = manage(env, "pairing_code").strip().splitlines()[-1]
    request = urllib.request.Request(http_url + "/pair", method="POST", data=b"",
                                     headers={"X-Pairing-Code": code})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["token"]


SEED_HISTORY = """
import django
django.setup()
from sessions_app.models import ChatSession, Message
session_id, count = {session_id!r}, {count}
ChatSession.objects.filter(pk=session_id).delete()
session = ChatSession.objects.create(pk=session_id, name="long history")
text = "A message of a long conversation, long enough to look like one. " * 3
batch = []
for seq in range(1, count + 1):
    role = "user" if seq % 2 else "assistant"
    batch.append(Message(session=session, seq=seq, role=role, content=f"{{seq}}: {{text}}"))
    if len(batch) == 1000:
        Message.objects.bulk_create(batch)
        batch = []
Message.objects.bulk_create(batch)
ChatSession.objects.filter(pk=session_id).update(message_count=count)
"""


def seed_history(env, session_id, count):
    subprocess.run([PY, "-c", SEED_HISTORY.format(session_id=session_id, count=count)], cwd=REPO,
                   env=env, check=True, timeout=300, stdin=subprocess.DEVNULL)


# --- Clients ---------------------------------------------------------------------------


@dataclass
class StreamRound:
    sessions: int
    chunks: int = 0
    expected: int = 0
    seconds: float = 0.0
    cpu: float = 0.0
    latencies: list = field(default_factory=list)
    first_chunk: list = field(default_factory=list)
    steady: list = field(default_factory=list)  # latencies after each answer's first STEADY_AFTER chunks
    other_cpu: dict = field(default_factory=dict)
    failures: int = 0

    @property
    def rate(self):
        return self.chunks / self.seconds if self.seconds else 0.0


def _stamp(content: str) -> float:
    return float(content[3:content.index(">")])


async def _open(url, headers):
    ws = await connect(url, additional_headers=headers, compression=None, max_size=None,
                       open_timeout=60, ping_interval=None)
    start = json.loads(await asyncio.wait_for(ws.recv(), 60))
    if start.get("type") != "session_start":
        raise RuntimeError(f"expected session_start, got {start}")
    return ws


async def _gather_limited(factories, limit=CONNECT_CONCURRENCY):
    semaphore = asyncio.Semaphore(limit)

    async def run(factory):
        async with semaphore:
            return await factory()

    return await asyncio.gather(*(run(f) for f in factories))


async def stream_round(url_for, headers, sessions, chunks, server: Process, delay_ms=0,
                       stagger=0.0, timeout=60.0):
    """K sockets connected first, then all send at once; chunks/s from the first send to the last done."""
    sockets = await _gather_limited([lambda i=i: _open(url_for(i), headers) for i in range(sessions)])
    result = StreamRound(sessions=sessions, expected=sessions * chunks)
    pace = f" [[delay_ms={delay_ms}]]" if delay_ms else ""
    message = json.dumps({"type": "message", "content": f"[[chunks={chunks}]] [[stamp]]{pace}"})

    async def one(index, ws):
        if stagger:
            await asyncio.sleep(stagger * index / sessions)
        sent = time.monotonic()
        await ws.send(message)
        count = 0
        latencies = []
        first = None
        while True:
            raw = await ws.recv()
            now = time.time()
            frame = json.loads(raw)
            kind = frame.get("type")
            if kind == "chunk":
                if first is None:
                    first = time.monotonic() - sent
                count += 1
                latencies.append(now - _stamp(frame["content"]))
            elif kind in TERMINAL:
                if kind != "done":
                    log(f"turn failed: {frame}")
                return count, latencies, first, kind != "done"

    cpu0 = server.cpu_seconds()
    others0 = [p.cpu_seconds() for p in OBSERVED]
    client0 = time.process_time()
    started = time.monotonic()
    outcomes = await asyncio.wait_for(
        asyncio.gather(*(one(i, ws) for i, ws in enumerate(sockets))), timeout)
    result.seconds = time.monotonic() - started
    result.cpu = server.cpu_seconds() - cpu0
    result.other_cpu = {p.name: round(p.cpu_seconds() - c, 2) for p, c in zip(OBSERVED, others0)}
    result.other_cpu["client"] = round(time.process_time() - client0, 2)
    for count, latencies, first, failed in outcomes:
        result.chunks += count
        result.latencies.extend(latencies)
        result.steady.extend(latencies[STEADY_AFTER:])
        result.failures += failed
        if first is not None:
            result.first_chunk.append(first)
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    return result


async def resume_times(url, headers, count) -> list[float]:
    """Seconds from starting the connection to receiving session_start, one socket at a time."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        ws = await _open(url, headers)
        times.append(time.perf_counter() - started)
        await ws.close()
    return times


async def idle_memory(url_for, headers, count, server: Process, settle=3.0) -> tuple[float, float]:
    """(bytes of server RSS per idle socket, seconds to open them all)."""
    warm = await _gather_limited([lambda i=i: _open(url_for(-1 - i), headers) for i in range(20)])
    await asyncio.gather(*(ws.close() for ws in warm))
    await asyncio.sleep(settle)
    before = server.rss()
    started = time.monotonic()
    sockets = await _gather_limited([lambda i=i: _open(url_for(i), headers) for i in range(count)])
    opened = time.monotonic() - started
    await asyncio.sleep(settle)
    after = server.rss()
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    return (after - before) / count, opened


# --- Figures ---------------------------------------------------------------------------


def percentile(values, p):
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


@dataclass
class StreamFigures:
    label: str
    rounds: list
    paced: StreamRound | None = None

    @property
    def best(self) -> StreamRound:
        return max(self.rounds, key=lambda r: r.rate)

    @property
    def median_rate(self):
        return statistics.median(r.rate for r in self.rounds)

    @property
    def latencies(self):
        return [v for r in self.rounds for v in r.latencies]

    def cpu_per_chunk_us(self):
        chunks = sum(r.chunks for r in self.rounds)
        return sum(r.cpu for r in self.rounds) / chunks * 1e6 if chunks else float("nan")

    def summary(self):
        lat = self.latencies
        paced = self.paced.latencies if self.paced else []
        rounds = self.rounds + ([self.paced] if self.paced else [])
        return {
            "chunks_per_s_median": round(self.median_rate),
            "chunks_per_s_rounds": [round(r.rate) for r in self.rounds],
            "server_cpu_us_per_chunk": round(self.cpu_per_chunk_us(), 1),
            "saturated_latency_ms_p50": round(percentile(lat, 50) * 1000, 2),
            "saturated_latency_ms_p99": round(percentile(lat, 99) * 1000, 2),
            "paced_chunks_per_s": round(self.paced.rate) if self.paced else None,
            "paced_first_chunk_ms_p50": round(percentile(self.paced.first_chunk, 50) * 1000, 1)
            if self.paced else None,
            "paced_first_chunk_ms_max": round(max(self.paced.first_chunk, default=0) * 1000, 1)
            if self.paced else None,
            "latency_ms_p50": round(percentile(paced, 50) * 1000, 2),
            "latency_ms_p99": round(percentile(paced, 99) * 1000, 2),
            "steady_latency_ms_p99": round(percentile(self.paced.steady, 99) * 1000, 2)
            if self.paced else None,
            "chunks": sum(r.chunks for r in rounds),
            "expected": sum(r.expected for r in rounds),
            "failed_turns": sum(r.failures for r in rounds),
        }


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Target:
    """A server under test: where to connect and with which headers."""

    label: str
    server: Process
    url_for: object  # prefix -> (index -> ws url)
    headers: dict


async def run_stream_rounds(targets: list[Target], args) -> dict:
    """Warm each target up, then interleave their rounds, so the machine's noise hits all alike."""
    for target in targets:
        log(f"{target.label}: warm-up")
        await stream_round(target.url_for(f"{target.label}-warm"), target.headers,
                           min(10, args.sessions), 20, target.server)
    rounds = {target.label: [] for target in targets}
    for index in range(args.rounds):
        for target in targets:
            result = await stream_round(target.url_for(f"{target.label}-r{index}"), target.headers,
                                        args.sessions, args.chunks, target.server)
            log(f"{target.label}: round {index + 1}: {result.chunks}/{result.expected} chunks in "
                f"{result.seconds:.2f} s = {result.rate:.0f}/s, server CPU {result.cpu:.2f} s, "
                f"others {result.other_cpu}")
            rounds[target.label].append(result)
    figures = {}
    for target in targets:
        paced = None
        if args.paced_delay_ms:
            paced = await stream_round(target.url_for(f"{target.label}-paced"), target.headers,
                                       args.sessions, args.paced_chunks, target.server,
                                       delay_ms=args.paced_delay_ms,
                                       stagger=args.paced_stagger_ms / 1000)
            log(f"{target.label}: paced round, chunks {args.paced_delay_ms} ms apart: {paced.chunks}/"
                f"{paced.expected} chunks, {paced.rate:.0f}/s, p50 "
                f"{percentile(paced.latencies, 50) * 1000:.1f} ms, p99 "
                f"{percentile(paced.latencies, 99) * 1000:.1f} ms (after each answer's first "
                f"{STEADY_AFTER} chunks: {percentile(paced.steady, 99) * 1000:.1f} ms); first chunk after p50 "
                f"{percentile(paced.first_chunk, 50) * 1000:.0f} ms, max "
                f"{max(paced.first_chunk, default=0) * 1000:.0f} ms")
        figures[target.label] = StreamFigures(target.label, rounds[target.label], paced)
    return figures


def gateway_url_for(ws_base):
    def for_prefix(prefix):
        return lambda i: f"{ws_base}?session_id=bench-{prefix}-{i}"
    return for_prefix


def relay_url_for(ws_base):
    return lambda prefix: (lambda i: ws_base)


async def main(args) -> dict:
    fd_limit = raise_fd_limit(max(4096, args.idle * 2 + 512))
    workdir = Path(tempfile.mkdtemp(prefix="construct-bench-"))
    figures: dict = {"config": {
        "sessions": args.sessions, "chunks": args.chunks, "rounds": args.rounds,
        "idle_sockets": args.idle, "history": args.history, "cpus": os.cpu_count(),
        "paced_chunks": args.paced_chunks,
        "paced_delay_ms": args.paced_delay_ms, "paced_stagger_ms": args.paced_stagger_ms,
        "open_files_limit": fd_limit,
    }}
    database_url = args.database_url or f"sqlite:///{workdir / 'bench.sqlite3'}"
    figures["config"]["database"] = database_url.split(":", 1)[0]
    figures["config"]["server_env"] = args.server_env
    redis_url = args.redis_url or os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    phases = set(args.phases.split(","))
    processes: list[Process] = []
    try:
        mock, mock_url = start_mock(workdir)
        processes.append(mock)
        OBSERVED.append(mock)
        env = gateway_env(mock_url, database_url, None, workdir, args.server_env)
        log("migrating the benchmark database")
        manage(env, "migrate", "--noinput")

        targets = []
        if "relay" in phases:
            relay, relay_ws = start_relay(workdir, mock_url)
            processes.append(relay)
            targets.append(Target("relay", relay, relay_url_for(relay_ws), {}))
        gateway, http_url, ws_base = start_gateway("gateway", env, workdir)
        processes.append(gateway)
        headers = {"Authorization": f"Bearer {pair(env, http_url)}"}
        if "inproc" in phases:
            targets.append(Target("inproc", gateway, gateway_url_for(ws_base), headers))
        if "redis" in phases:
            renv = gateway_env(mock_url, database_url, redis_url, workdir, args.server_env)
            try:
                rgateway, _http, rws_base = start_gateway("gateway-redis", renv, workdir)
            except RuntimeError as exc:
                log(f"redis: skipped, the gateway did not start with REDIS_URL: {exc}")
            else:
                processes.append(rgateway)
                targets.append(Target("redis", rgateway, gateway_url_for(rws_base), headers))
        if targets:
            figures.update(await run_stream_rounds(targets, args))
        for target in targets:
            if target.label != "inproc":
                target.server.stop()

        if "resume" in phases:
            log(f"resume: seeding {args.history} messages")
            seed_history(env, "bench-history", args.history)
            await resume_times(f"{ws_base}?session_id=bench-history", headers, 3)  # warm
            figures["resume_long"] = await resume_times(
                f"{ws_base}?session_id=bench-history", headers, args.resume_samples)
            figures["resume_empty"] = await resume_times(
                f"{ws_base}?session_id=bench-empty", headers, args.resume_samples)
        gateway.stop()

        if "idle" in phases:
            # Fresh processes: what the stream rounds left in memory is not the sockets' cost.
            if "relay" in phases:
                relay, relay_ws = start_relay(workdir, mock_url)
                processes.append(relay)
                log(f"relay: {args.idle} idle sockets")
                figures["relay_idle_bytes"], _ = await idle_memory(
                    lambda i: relay_ws, {}, args.idle, relay)
                relay.stop()
            gateway, http_url, ws_base = start_gateway("gateway-idle", env, workdir)
            processes.append(gateway)
            log(f"idle: {args.idle} idle sockets on the gateway")
            figures["idle_bytes"], figures["idle_open_seconds"] = await idle_memory(
                lambda i: f"{ws_base}?session_id=bench-idle-{i}", headers, args.idle, gateway)
            gateway.stop()
            if "redis" in phases:
                renv = gateway_env(mock_url, database_url, redis_url, workdir, args.server_env)
                gateway, http_url, ws_base = start_gateway("gateway-redis-idle", renv, workdir)
                processes.append(gateway)
                log(f"idle: {args.idle} idle sockets on the gateway with REDIS_URL")
                figures["idle_redis_bytes"], _ = await idle_memory(
                    lambda i: f"{ws_base}?session_id=bench-ridle-{i}", headers, args.idle, gateway)
                gateway.stop()
    finally:
        for proc in processes:
            proc.stop()
        if args.keep_logs:
            log(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return figures


# --- Report ----------------------------------------------------------------------------


def ratio(ours, theirs):
    return f"{ours / theirs:.2f}" if theirs else "n/a"


def report(figures) -> str:
    cfg = figures["config"]
    lines = [
        f"K = {cfg['sessions']} sessions x {cfg['chunks']} chunks, {cfg['rounds']} rounds "
        f"(median round), {cfg['cpus']} CPUs, database {cfg['database']}; paced round: "
        f"{cfg['sessions']} x {cfg.get('paced_chunks', '?')} chunks {cfg['paced_delay_ms']} ms apart, "
        f"messages spread over {cfg['paced_stagger_ms']} ms"
        + (f", gateway env {' '.join(cfg['server_env'])}" if cfg["server_env"] else ""),
        "",
        "| stream | chunks/s (rounds) | vs relay | server CPU us/chunk | saturated p50/p99 ms "
        f"| paced p50 / p99 added ms | paced p99 after {STEADY_AFTER} chunks "
        "| paced first chunk p50 / max ms | chunks received |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    relay = figures.get("relay")
    for key in ("relay", "inproc", "redis"):
        fig = figures.get(key)
        if fig is None:
            continue
        s = fig.summary()
        vs = ratio(fig.median_rate, relay.median_rate) if relay else "n/a"
        lines.append(
            f"| {key} | {s['chunks_per_s_median']} ({', '.join(map(str, s['chunks_per_s_rounds']))})"
            f" | {vs} | {s['server_cpu_us_per_chunk']}"
            f" | {s['saturated_latency_ms_p50']}/{s['saturated_latency_ms_p99']}"
            f" | {s['latency_ms_p50']} / {s['latency_ms_p99']} | {s['steady_latency_ms_p99']}"
            f" | {s['paced_first_chunk_ms_p50']} / {s['paced_first_chunk_ms_max']}"
            f" | {s['chunks']}/{s['expected']}{' FAILED TURNS ' + str(s['failed_turns']) if s['failed_turns'] else ''} |"
        )
    if figures.get("redis") and figures.get("inproc"):
        lines += ["", f"Redis layer / in-process layer, chunks/s: "
                      f"{ratio(figures['redis'].median_rate, figures['inproc'].median_rate)}"]
    if "resume_long" in figures:
        long_ms = [t * 1000 for t in figures["resume_long"]]
        empty_ms = [t * 1000 for t in figures["resume_empty"]]
        lines += ["", f"connect to session_start, {cfg['history']}-message session: "
                      f"p50 {percentile(long_ms, 50):.1f} ms, max {max(long_ms):.1f} ms "
                      f"(empty session: p50 {percentile(empty_ms, 50):.1f} ms)"]
    if "idle_bytes" in figures:
        line = (f"idle sockets: {cfg['idle_sockets']} open in {figures['idle_open_seconds']:.1f} s, "
                f"{figures['idle_bytes'] / 1024:.1f} KiB of server RSS each")
        if "relay_idle_bytes" in figures:
            line += (f" (relay: {figures['relay_idle_bytes'] / 1024:.1f} KiB, ratio "
                     f"{ratio(figures['idle_bytes'], figures['relay_idle_bytes'])})")
        if "idle_redis_bytes" in figures:
            line += f"; with REDIS_URL {figures['idle_redis_bytes'] / 1024:.1f} KiB each"
        lines += ["", line]
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=100, help="concurrent streaming sessions (K)")
    parser.add_argument("--chunks", type=int, default=400, help="chunks per answer (N)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--paced-delay-ms", type=int, default=20,
                        help="ms between chunks in the latency round (0: no paced round)")
    parser.add_argument("--paced-chunks", type=int, default=100, help="chunks per answer, paced round")
    parser.add_argument("--paced-stagger-ms", type=int, default=2000,
                        help="the paced round's messages are sent spread over this long (0: all at once)")
    parser.add_argument("--idle", type=int, default=2000, help="idle sockets for the memory figure")
    parser.add_argument("--history", type=int, default=10_000, help="messages in the resumed session")
    parser.add_argument("--resume-samples", type=int, default=30)
    parser.add_argument("--phases", default="relay,inproc,resume,idle,redis")
    parser.add_argument("--database-url", default=None, help="default: a new SQLite file")
    parser.add_argument("--redis-url", default=None, help="default: $REDIS_URL or 127.0.0.1:6379/0")
    parser.add_argument("--persistent-db", action="store_true",
                        help="run the gateway with bench/persistent_db_settings.py (CONN_MAX_AGE=None)")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment for the gateway (repeatable), for experiments")
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON too")
    parser.add_argument("--keep-logs", action="store_true")
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.persistent_db:
        arguments.server_env.append("DJANGO_SETTINGS_MODULE=bench.persistent_db_settings")
    results = asyncio.run(main(arguments))
    print(report(results))
    if arguments.json:
        print(json.dumps({k: (v.summary() if isinstance(v, StreamFigures) else v)
                          for k, v in results.items()}, indent=2))
