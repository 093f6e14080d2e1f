"""After collectstatic (as `run.py serve` and deploy/supervise.py run it), the page links
fingerprinted files that WhiteNoise serves compressed and cached for good, and it still works."""

import re
import subprocess
import sys

import httpx
import pytest

from tests.browser.conftest import browser_server
from tests.browser.helpers import TOKEN_KEY, answer_text, pairing_code, send, wait_online, wait_turn_end
from tests.e2e.conftest import gateway_env
from tests.support.daphne import REPO_ROOT, server_env

HASHED = re.compile(r"/static/chat/main\.[0-9a-f]{12}\.js")
FOREVER = "max-age=315360000, public, immutable"


@pytest.fixture(scope="module")
def collected_server(tmp_path_factory, mock_llm_process):
    static_root = tmp_path_factory.mktemp("staticfiles")
    env = gateway_env(mock_llm_process, CONSTRUCT_STATIC_ROOT=str(static_root))
    subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"],
                   cwd=REPO_ROOT, env=server_env(env), check=True, timeout=120,
                   stdin=subprocess.DEVNULL)
    assert (static_root / "staticfiles.json").is_file()
    with browser_server(tmp_path_factory, "collected", env) as server:
        yield server


def test_the_page_links_fingerprinted_files_cached_for_good(collected_server):
    html = httpx.get(collected_server.url + "/", timeout=10).text
    script = HASHED.search(html).group(0)
    style = re.search(r"/static/chat/chat\.[0-9a-f]{12}\.css", html).group(0)

    for path in (script, style):
        response = httpx.get(collected_server.url + path, headers={"Accept-Encoding": "gzip"},
                             timeout=10)
        assert response.status_code == 200, path
        assert response.headers["cache-control"] == FOREVER
        assert response.headers["content-encoding"] == "gzip"
    # The modules import each other by their fingerprinted names too.
    module = httpx.get(collected_server.url + script, timeout=10).text
    assert re.search(r'from "\./api\.[0-9a-f]{12}\.js"', module)
    # A plain name still answers (an old page, a bookmark), but only for a short while.
    plain = httpx.get(collected_server.url + "/static/chat/main.js", timeout=10)
    assert plain.status_code == 200 and "immutable" not in plain.headers["cache-control"]


def test_the_collected_page_pairs_and_streams(collected_server, page):
    page.goto(collected_server.url + "/")
    page.wait_for_selector("#pairing-code", state="visible")
    page.fill("#pairing-code", pairing_code(collected_server))
    page.click("#pairing-submit")
    wait_online(page)
    assert page.evaluate(f"localStorage.getItem('{TOKEN_KEY}')").startswith("zc_")

    send(page, "[[chunks=3]] collected")
    wait_turn_end(page, 1, end="done")

    assert answer_text(page)
