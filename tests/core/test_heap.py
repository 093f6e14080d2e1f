"""What the process imported stays out of the collector's full walks (construct_core.heap).

A full collection walks every tracked object; frozen ones it skips. These tests
check that enabling freezes what is held, that garbage made afterwards is still
collected, that a later import freezes again once and only once, and that a
process (or test run) that never enables it is left alone.
"""

import gc
import sys
import types
import weakref

import pytest

from construct_core import heap


@pytest.fixture
def frozen():
    assert gc.get_freeze_count() == 0, "something else froze this process"
    try:
        yield heap
    finally:
        heap.freeze_disable()
        sys.modules.pop("construct_heap_probe", None)


class Node:
    """An object in a reference cycle: only the collector frees it."""

    def __init__(self):
        self.me = self


def garbage_grown_old(count):
    """`count` objects in reference cycles, alive at a collection of the younger generations
    (so now in the oldest), then let go: a weak reference to one of them. Only a full
    collection frees them, as it does a closed socket's objects."""
    old = [Node() for _ in range(count)]
    gc.collect(1)
    return weakref.ref(old[0])


def test_nothing_is_frozen_until_enabled():
    assert heap.freeze_if_imported() is False
    assert gc.get_freeze_count() == 0


def test_enabling_takes_what_is_held_out_of_full_collections(frozen):
    # What is held: garbage left by earlier tests (tens of thousands of objects in a full
    # run) is collected first, as freeze_enable collects before it freezes.
    gc.collect()
    walked_before = len(gc.get_objects())
    count = frozen.freeze_enable()
    # (Frozen objects can still be freed, by another thread too: the count only falls.)
    assert count > 0.9 * walked_before and gc.get_freeze_count() <= count
    # A full collection walks only what was made since: a few objects, not the process.
    assert len(gc.get_objects()) < 0.1 * walked_before


def test_garbage_made_after_the_freeze_is_still_collected(frozen):
    frozen.freeze_enable()
    node = Node()
    gone = weakref.ref(node)
    del node
    gc.collect()
    assert gone() is None


def test_garbage_held_before_it_is_collected_first_not_frozen(frozen):
    node = Node()
    gone = weakref.ref(node)
    del node  # unreachable, not yet collected
    frozen.freeze_enable()
    assert gone() is None


def test_an_import_freezes_again_once(frozen):
    frozen.freeze_enable()
    assert frozen.freeze_if_imported() is False  # nothing imported since: no collection
    made_since = Node()
    assert id(made_since) in {id(o) for o in gc.get_objects()}  # walked by a full collection
    sys.modules["construct_heap_probe"] = types.ModuleType("construct_heap_probe")
    assert frozen.freeze_if_imported() is True
    assert id(made_since) not in {id(o) for o in gc.get_objects()}  # frozen with the import
    assert frozen.freeze_if_imported() is False


def test_the_youngest_generation_is_collected_less_often(frozen):
    default = gc.get_threshold()
    frozen.freeze_enable()
    frozen.freeze_enable()  # twice: the thresholds it found are kept, not its own
    assert gc.get_threshold() == (heap.YOUNG_THRESHOLD, *default[1:])
    young = [Node() for _ in range(2 * default[0])]  # would have started a collection
    assert gc.get_count()[0] >= len(young)
    frozen.freeze_disable()
    assert gc.get_threshold() == default


def test_disabling_gives_everything_back(frozen):
    default = gc.get_threshold()
    frozen.freeze_enable()
    frozen.freeze_disable()
    assert gc.get_freeze_count() == 0 and gc.get_threshold() == default
    sys.modules["construct_heap_probe"] = types.ModuleType("construct_heap_probe")
    assert heap.freeze_if_imported() is False


def test_a_freeze_at_a_turn_s_end_walks_only_the_younger_generations(frozen):
    """A full collection there would be the pause this module is there to avoid: the only
    one it runs comes after the freeze, and walks nothing."""
    frozen.freeze_enable()
    held = [Node() for _ in range(5000)]  # objects held, and not frozen, at the turn's end
    walks = []  # (generation, objects it walks)

    def seen(phase, info):
        if phase == "start":
            generation = info["generation"]
            walks.append((generation, sum(len(gc.get_objects(g)) for g in range(generation + 1))))

    gc.callbacks.append(seen)
    try:
        sys.modules["construct_heap_probe"] = types.ModuleType("construct_heap_probe")
        assert frozen.freeze_if_imported() is True
    finally:
        gc.callbacks.remove(seen)
    assert walks and walks[0][0] <= 1 and walks[0][1] >= len(held), walks
    assert all(walked < 100 for generation, walked in walks if generation == 2), walks


def test_garbage_that_grew_old_is_collected_by_the_usual_rule_not_after_the_frozen_count(frozen):
    """Objects that die after growing old (a closed socket's, in reference cycles) wait for a
    full collection. Python runs one when a quarter as many objects as the last one kept have
    grown old since: counted before the freeze, that was everything frozen, and they waited
    for tens of thousands more."""
    frozen.freeze_enable()
    gc.set_threshold(100, 10, 10)  # the same rule, reached with fewer objects
    gone = garbage_grown_old(1000)
    full = []

    def seen(phase, info):
        if phase == "stop" and info["generation"] == 2:
            full.append(info["collected"])

    kept = []  # new objects that live on (they age too, as a process's do)
    gc.callbacks.append(seen)
    try:
        while not full and len(kept) < 30_000:
            kept.append([])
    finally:
        gc.callbacks.remove(seen)
    assert full and gone() is None, (len(kept), gc.get_freeze_count())


def test_a_full_collection_is_due_once_a_minute_at_most_and_frees_garbage_that_grew_old(frozen):
    """Under steady streaming the collector's own count reaches a full collection only after
    hours; a turn's end runs one when FULL_EVERY seconds have passed since the last."""
    import time

    assert frozen.collect_if_due(time.monotonic() + 10 * frozen.FULL_EVERY) is False  # not enabled
    frozen.freeze_enable()
    now = time.monotonic()
    assert frozen.collect_if_due(now) is False  # the freeze has just collected everything
    gone = garbage_grown_old(100)
    gc.collect(1)
    assert gone() is not None  # the younger generations' collections do not reach it
    later = now + frozen.FULL_EVERY + 1
    assert frozen.collect_if_due(later) is True and gone() is None
    assert frozen.collect_if_due(later + frozen.FULL_EVERY / 2) is False
    assert frozen.collect_if_due(later + frozen.FULL_EVERY + 1) is True
