"""GET / (the chat page) without a browser: the page, its policy, its vendored files."""

import re

from django.contrib.staticfiles import finders
from django.test import Client

from tests.support.daphne import REPO_ROOT


def test_the_page_needs_no_token_and_sets_a_strict_policy():
    response = Client().get("/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "'unsafe-inline'" not in policy.split("script-src")[1].split(";")[0]
    assert "frame-ancestors 'none'" in policy
    html = response.content.decode()
    for asset in ("vendor/marked/marked.umd.js", "vendor/dompurify/purify.min.js", "vendor/highlight/highlight.min.js",
                  "vendor/highlight/a11y-light.min.css", "vendor/highlight/a11y-dark.min.css",
                  "chat/main.js", "chat/chat.css"):
        assert f"/static/{asset}" in html
    # Every page context the socket accepts can be chosen, plus plain chat.
    for value in ("", "agent_pool", "agent_teams", "skills", "workflows", "canvas"):
        assert f'<option value="{value}">' in html


def test_only_get_and_head():
    assert Client().post("/").status_code == 405
    assert Client().head("/").status_code == 200


def test_vendored_libraries_are_found_with_their_licences_and_pinned_versions():
    for path in ("vendor/marked/marked.umd.js", "vendor/marked/LICENSE",
                 "vendor/dompurify/purify.min.js", "vendor/dompurify/LICENSE",
                 "vendor/highlight/highlight.min.js", "vendor/highlight/LICENSE",
                 "chat/main.js", "chat/render.js", "chat/api.js", "chat/sidebar.js", "chat/panels.js",
                 "chat/chat.css"):
        assert finders.find(path), path
    script = (REPO_ROOT / "scripts" / "vendor_frontend.sh").read_text()
    pinned = dict(re.findall(r"^(MARKED|DOMPURIFY|HLJS|AXE)_VERSION=(\S+)$", script, re.MULTILINE))
    versions = (REPO_ROOT / "static" / "vendor" / "VERSIONS").read_text()
    assert f"marked {pinned['MARKED']} " in versions
    assert f"dompurify {pinned['DOMPURIFY']} " in versions
    assert f"marked v{pinned['MARKED']}" in (REPO_ROOT / "static/vendor/marked/marked.umd.js").read_text()[:200]
    assert f"DOMPurify {pinned['DOMPURIFY']}" in (REPO_ROOT / "static/vendor/dompurify/purify.min.js").read_text()[:200]
    assert f"highlight.js {pinned['HLJS']} " in versions
    assert f"Highlight.js v{pinned['HLJS']}" in (REPO_ROOT / "static/vendor/highlight/highlight.min.js").read_text()[:200]
    # axe-core is the browser tests' own, never among the files the gateway serves.
    tests_vendor = REPO_ROOT / "tests" / "browser" / "vendor"
    assert f"axe-core {pinned['AXE']} " in (tests_vendor / "VERSIONS").read_text()
    assert f"axe v{pinned['AXE']}" in (tests_vendor / "axe-core" / "axe.min.js").read_text()[:200]
    assert (tests_vendor / "axe-core" / "LICENSE").exists()
    assert not finders.find("axe-core/axe.min.js") and not finders.find("vendor/axe-core/axe.min.js")
