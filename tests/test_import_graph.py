"""No import cycle between two files of the product, found with grimp (import-linter's graph).

The `acyclic_siblings` contract in .importlinter checks siblings only: a cycle
through a package's own __init__ (chat.turns -> chat.turns.run -> chat.turns)
is none of its business. This checks every file against every other.
"""

import grimp

PRODUCT = ("construct_site", "chat", "sessions_app", "construct_core")

def import_cycles(graph) -> list[list[str]]:
    """One chain per direct import that is part of a cycle: importer -> imported -> ... -> importer."""
    cycles = []
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back:
                cycles.append([importer, *back])
    return cycles


def test_no_import_cycle_between_files():
    graph = grimp.build_graph(*PRODUCT, cache_dir=None)
    assert {"chat.consumers", "chat.turns.run", "sessions_app.models", "construct_core.errors"} <= graph.modules
    assert import_cycles(graph) == []


def test_a_cycle_is_found():
    graph = grimp.ImportGraph()
    for module in ("pkg", "pkg.a", "pkg.b", "pkg.c"):
        graph.add_module(module)
    graph.add_import(importer="pkg.a", imported="pkg.b")
    graph.add_import(importer="pkg.b", imported="pkg")  # through the package's __init__
    graph.add_import(importer="pkg", imported="pkg.a")
    graph.add_import(importer="pkg.c", imported="pkg.a")

    assert import_cycles(graph) == [
        ["pkg", "pkg.a", "pkg.b", "pkg"], ["pkg.a", "pkg.b", "pkg", "pkg.a"],
        ["pkg.b", "pkg", "pkg.a", "pkg.b"],
    ]
