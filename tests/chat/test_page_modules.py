"""The chat page's ES modules (static/chat/*.js): one job each, imports one way, no cycles.

What import-linter does for the Python packages, for the page: main.js wires
the features; a feature imports only shared helpers, never another feature;
a shared helper imports only shared helpers.
"""

import re

from tests.support.daphne import REPO_ROOT

CHAT = REPO_ROOT / "static" / "chat"
# Helpers any module may import. Every other module but main.js is a feature.
SHARED = {"api.js", "approval.js", "banner.js", "branch.js", "errors.js", "files.js", "render.js", "state.js", "util.js"}
IMPORT = re.compile(r"""\b(?:from|import)\s*\(?\s*["']\./([^"']+)["']""")


def modules():
    return {path.name: IMPORT.findall(path.read_text()) for path in sorted(CHAT.glob("*.js"))}


def test_every_module_starts_with_a_comment_saying_its_job():
    for name in modules():
        first = (CHAT / name).read_text().lstrip().splitlines()[0]
        assert first.startswith("//") and len(first) > 20, name


def test_imports_resolve_and_point_one_way():
    graph = modules()
    assert "main.js" in graph and SHARED <= set(graph)
    for name, imported in graph.items():
        for target in imported:
            assert target in graph, f"{name} imports {target}, which is not in static/chat/"
            assert target != "main.js", f"{name} imports main.js"
            if name != "main.js":
                assert target in SHARED, f"{name} imports the feature {target}: wire them in main.js"


def test_no_import_cycles():
    graph = modules()
    done, path = set(), []

    def visit(name):
        assert name not in path, " -> ".join(path + [name])
        if name in done:
            return
        path.append(name)
        for target in graph[name]:
            visit(target)
        path.pop()
        done.add(name)

    for name in graph:
        visit(name)
