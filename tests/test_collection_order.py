"""The order run.py's workers take files in: the costliest first (tests/conftest.py)."""

from pathlib import Path
from types import SimpleNamespace

from tests.conftest import LIVE_WEIGHT, TESTS_DIR, slow_files_first


def item(path, name, fixtures=(), slow=False):
    return SimpleNamespace(path=Path(path), name=name, fixturenames=list(fixtures),
                           get_closest_marker=lambda marker: object() if slow and marker == "slow" else None)


def test_one_live_test_goes_before_many_quick_ones_and_files_stay_whole():
    items = [
        item("quick.py", "q1"), item("quick.py", "q2"), item("quick.py", "q3"),
        item("browser.py", "b1", fixtures=("page", "chromium")),
        item("server.py", "s1", fixtures=("daphne_factory", "tmp_path")),
        item("server.py", "s2"),
        item("marked.py", "m1", slow=True),
        item("quick.py", "q4"),
    ]
    slow_files_first(items)
    assert [i.name for i in items] == ["s1", "s2", "b1", "m1", "q1", "q2", "q3", "q4"]


def test_a_live_test_outweighs_fewer_quick_tests_than_its_weight_only():
    many = [item("many.py", f"q{n}") for n in range(LIVE_WEIGHT + 1)]
    items = [item("live.py", "live", fixtures=("mock_llm_process",)), *many]
    slow_files_first(items)
    assert items[0].name == "q0" and items[-1].name == "live"



def test_a_test_in_a_live_folder_counts_as_live_whatever_its_fixtures():
    items = [item(TESTS_DIR / "api" / "test_quick.py", f"q{n}") for n in range(LIVE_WEIGHT - 1)]
    items.append(item(TESTS_DIR / "multiprocess" / "test_two.py", "two", fixtures=("tmp_path",)))
    slow_files_first(items)
    assert items[0].name == "two"
