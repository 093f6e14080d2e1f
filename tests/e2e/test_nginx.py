"""deploy/nginx.conf in front of a real daphne: admin login, a chat turn, and a log without tokens.

A private nginx runs on a free port with its own prefix in a temporary folder,
serving the example configuration's own server block (only the listen port,
the upstream servers and the log folder changed), so what is tested is what
operators copy.
"""

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.e2e.conftest import gateway_env, pair
from tests.support.daphne import REPO_ROOT, server_env
from tests.support.services import free_port, missing

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
PASSWORD = "through the proxy 12345"


def adapted_config(*, listen_port: int, upstream_port: int, log_dir: Path) -> str:
    """deploy/nginx.conf with its ports and log folder pointed at this test's."""
    text = (REPO_ROOT / "deploy" / "nginx.conf").read_text()
    text = re.sub(r"\n\s*server 127\.0\.0\.1:800[2-9];", "", text)
    text = text.replace("server 127.0.0.1:8001;", f"server 127.0.0.1:{upstream_port};")
    text = text.replace("listen 80;", f"listen 127.0.0.1:{listen_port};")
    text = text.replace("/var/log/nginx/", f"{log_dir}/")
    assert f"127.0.0.1:{upstream_port}" in text and str(listen_port) in text
    return text


class PrivateNginx:
    """`nginx -p PREFIX -c nginx.conf` in the foreground, with the adapted site included."""

    def __init__(self, prefix: Path, site: str, port: int):
        self.prefix = prefix
        self.port = port
        (prefix / "logs").mkdir(parents=True, exist_ok=True)
        (prefix / "site.conf").write_text(site)
        (prefix / "nginx.conf").write_text(
            "worker_processes 1;\n"
            f"error_log {prefix}/logs/error.log info;\n"
            f"pid {prefix}/nginx.pid;\n"
            "events { worker_connections 256; }\n"
            "http {\n"
            # Every other request logs the default way, query and all: a token
            # in a socket's URL must not end up here either.
            f"    access_log {prefix}/logs/access.log combined;\n"
            f"    client_body_temp_path {prefix}/client_body;\n"
            f"    proxy_temp_path {prefix}/proxy;\n"
            f"    fastcgi_temp_path {prefix}/fastcgi;\n"
            f"    uwsgi_temp_path {prefix}/uwsgi;\n"
            f"    scgi_temp_path {prefix}/scgi;\n"
            f"    include {prefix}/site.conf;\n"
            "}\n"
        )
        self.process = None

    def start(self):
        check = subprocess.run([NGINX, "-t", "-p", str(self.prefix), "-c", "nginx.conf"],
                               capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stderr
        with open(self.prefix / "logs" / "stderr.log", "wb") as stderr:
            self.process = subprocess.Popen(
                [NGINX, "-p", str(self.prefix), "-c", "nginx.conf", "-g", "daemon off;"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
            )
        deadline = time.monotonic() + 15
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2)
                return self
            except httpx.TransportError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"nginx did not start: {self.logs()}")
                time.sleep(0.1)

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def logs(self) -> str:
        return "".join(path.read_text(errors="replace") for path in self.prefix.rglob("*.log"))


@pytest.fixture
def behind_nginx(daphne_factory, mock_llm_process, tmp_path):
    """(nginx, daphne server, token, public URL): daphne behind the example config on a free port."""
    if not os.path.exists(NGINX):
        missing("nginx is not installed")
    port = free_port()
    # A name only CONSTRUCT_PUBLIC_URL makes the gateway accept (it is not in DJANGO_ALLOWED_HOSTS).
    public_url = f"http://chat.test:{port}"
    server = daphne_factory(env=gateway_env(
        mock_llm_process, CONSTRUCT_PUBLIC_URL=public_url, CONSTRUCT_TRUSTED_PROXIES="127.0.0.1",
        DJANGO_ALLOWED_HOSTS=None,
    ))
    created = subprocess.run(
        [sys.executable, "manage.py", "createsuperuser", "--noinput", "--username", "boss",
         "--email", "boss@example.org"],
        cwd=REPO_ROOT, env=server_env({**server.env, "DJANGO_SUPERUSER_PASSWORD": PASSWORD}),
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    assert created.returncode == 0, created.stderr
    token = pair(server)
    prefix = tmp_path / "nginx"
    nginx = PrivateNginx(prefix, adapted_config(listen_port=port, upstream_port=server.port,
                                                log_dir=prefix / "logs"), port)
    nginx.start()
    yield nginx, server, token, public_url
    nginx.stop()


@pytest.mark.parametrize("through", ["public URL", "backend address"])
def test_admin_login_through_nginx_on_a_port_other_than_80(behind_nginx, through):
    nginx, _server, _token, public_url = behind_nginx
    # The browser's view: its host and port in Host and Origin. The public URL's
    # origin is trusted as such; 127.0.0.1's passes only because nginx keeps the
    # port in Host, so the gateway's own origin matches the browser's.
    origin = public_url if through == "public URL" else f"http://127.0.0.1:{nginx.port}"
    browser = {"Host": origin.removeprefix("http://")}
    with httpx.Client(base_url=f"http://127.0.0.1:{nginx.port}", headers=browser,
                      timeout=15) as client:
        form = client.get("/admin/login/")
        assert form.status_code == 200
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
        login = client.post(
            "/admin/login/?next=/admin/",
            data={"username": "boss", "password": PASSWORD, "csrfmiddlewaretoken": csrf},
            headers={"Origin": origin, "Referer": f"{origin}/admin/login/"},
        )
        assert login.status_code == 302, login.text[:500]
        assert login.headers["location"] == "/admin/"
        assert client.get("/admin/").status_code == 200
        # Another site's page posting the same form is still refused.
        forged = client.post(
            "/admin/login/", data={"username": "boss", "password": PASSWORD,
                                   "csrfmiddlewaretoken": csrf},
            headers={"Origin": "http://evil.example"},
        )
        assert forged.status_code == 403


async def _turn(url: str, origin: str) -> list[dict]:
    frames = []
    async with connect(url, additional_headers={"Origin": origin}, open_timeout=15) as ws:
        start = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert start["type"] == "session_start"
        await ws.send(json.dumps({"type": "message", "content": "hello through nginx"}))
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 20))
            if frame.get("type") == "agent_event":
                continue
            frames.append(frame)
            if frame["type"] in ("done", "error", "stopped"):
                return frames


def test_a_chat_turn_through_nginx_and_no_token_in_its_logs(behind_nginx):
    nginx, server, token, public_url = behind_nginx
    url = f"ws://127.0.0.1:{nginx.port}/ws/chat?session_id=via-nginx&token={token}"

    frames = asyncio.run(_turn(url, public_url))

    assert frames[-1]["type"] == "done", frames[-1]
    assert frames[-1]["full_response"]
    assert any(frame["type"] == "chunk" for frame in frames)
    nginx.stop()  # flushes and closes its logs
    logs = nginx.logs()
    assert "GET /ws/chat HTTP/1.1\" 101" in logs
    assert token not in logs
    assert "token=" not in logs
    # The proxy's address is ours to trust: daphne sees the client through it.
    assert token not in server.output()
