"""Helpers for the browser tests: open the page paired, type, wait for turns, call the API."""

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

from tests.support.daphne import REPO_ROOT, server_env

ARTIFACTS = REPO_ROOT / "tests" / "artifacts" / "browser"
AXE = REPO_ROOT / "tests" / "browser" / "vendor" / "axe-core" / "axe.min.js"
TOKEN_KEY = "construct.token"


def open_paired(page, server, token, path="/"):
    """Open the chat page with `token` already in localStorage; wait for the socket."""
    # Once per tab (sessionStorage survives a reload), so a page that clears a
    # refused token does not get it back on its next load.
    # It runs in every frame; the sandboxed canvas frame has no storage at all.
    page.context.add_init_script(
        "try { if (!sessionStorage.getItem('seeded')) {"
        f" localStorage.setItem({json.dumps(TOKEN_KEY)}, {json.dumps(token)});"
        " sessionStorage.setItem('seeded', '1'); } } catch (e) {}"
    )
    page.goto(server.url + path)
    wait_online(page)


def wait_online(page):
    page.wait_for_selector("#conn[data-state=online]")


def send(page, text):
    """Type a message and press Enter, as a person would."""
    page.locator("#input").fill(text)
    page.locator("#input").press("Enter")


def last_answer(page):
    return page.locator("article.msg.assistant").last


def wait_turn_end(page, count, end=None, timeout=20_000):
    """Wait until `count` assistant turns have ended (optionally the last with `end`)."""
    selector = "article.msg.assistant[data-end]"
    page.wait_for_function(
        "([sel, n]) => document.querySelectorAll(sel).length >= n", arg=[selector, count], timeout=timeout
    )
    if end is not None:
        turn = last_answer(page)
        assert turn.get_attribute("data-end") == end, (turn.inner_text(), page.locator("#banner").inner_text())


def answer_text(page):
    return " ".join(last_answer(page).locator(".answer").all_inner_texts()).split()


def pairing_code(server):
    result = subprocess.run(
        [sys.executable, "manage.py", "pairing_code"], cwd=REPO_ROOT, env=server_env(server.env),
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=True,
    )
    return result.stdout.strip().splitlines()[-1]


def api(server, token, method, path, body=None):
    """(status, JSON or None) of a REST call with the token."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(server.url + path, method=method, data=data, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json",
    })
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
            return response.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as error:
        raw = error.read()
        return error.code, (json.loads(raw) if raw else None)


def session_id_of(page):
    page.wait_for_function("() => new URLSearchParams(location.search).get('session')")
    return page.evaluate("new URLSearchParams(location.search).get('session')")


def screenshot(page, name, full_page=False):
    """Save a PNG under tests/artifacts/browser/ (kept by CI, ignored by git)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def wait_for(predicate, timeout=10.0, interval=0.05, *, page=None):
    """Polls `predicate` until it is true.

    Give `page` when the predicate reads only what Playwright handlers (page.route,
    page.route_web_socket) collect in Python: sync Playwright runs those handlers only
    inside its own calls, so the wait must be one (`page.wait_for_timeout`), not a sleep.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        if page is not None:
            page.wait_for_timeout(interval * 1000)
        else:
            time.sleep(interval)


def create_user(server, username, password, *, staff=False, superuser=False):
    """A Django user in the server's database, as an operator would add one (manage.py)."""
    code = (
        "import os; from django.contrib.auth import get_user_model; "
        "get_user_model().objects.create_user(os.environ['NEW_USERNAME'], "
        "password=os.environ['NEW_PASSWORD'], is_staff=os.environ['NEW_STAFF'] == '1', "
        "is_superuser=os.environ['NEW_SUPERUSER'] == '1')"
    )
    subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code], cwd=REPO_ROOT,
        env=server_env({**server.env, "NEW_USERNAME": username, "NEW_PASSWORD": password,
                        "NEW_STAFF": "1" if staff or superuser else "0",
                        "NEW_SUPERUSER": "1" if superuser else "0"}),
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=True,
    )


def sign_in(page, username, password):
    """Fill the card's sign-in form and press Sign in, as a person would."""
    page.locator("#login-username").fill(username)
    page.locator("#login-password").fill(password)
    page.locator("#login-submit").click()


def axe_violations(page, impacts=("serious", "critical"), context="document"):
    """axe-core's serious and critical violations (`impacts`) of the page as it is now.

    `context` is a JavaScript expression for what to check: the whole document unless told.
    """
    # Colours change with short transitions (the admin's links: 0.15 s) after a switch of
    # scheme: let them end, or axe measures a colour half-way.
    page.wait_for_timeout(400)
    if not page.evaluate("typeof window.axe === 'object'"):
        # Evaluated through the debugging protocol: the page's policy (rightly) refuses an
        # injected <script> tag, and the test must not loosen that policy to check the page.
        page.evaluate(AXE.read_text() + "\n;undefined")
    result = page.evaluate(f"axe.run({context}, {{resultTypes: ['violations']}})")
    return [
        {"id": v["id"], "impact": v["impact"], "help": v["help"],
         "nodes": [n["target"] for n in v["nodes"]][:5], "summary": v["nodes"][0].get("failureSummary")}
        for v in result["violations"] if v["impact"] in impacts
    ]
