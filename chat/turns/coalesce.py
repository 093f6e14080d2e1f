"""Deltas that arrive together leave together: one `chunk` for what one wait brought.

A provider's reply reaches the turn as one delta per server-sent event. When
the process keeps up, each network read holds one event and each delta leaves
at once. When it falls behind (a burst, many sessions), one read holds many
events, and the agent yields their deltas back to back without the turn's task
ever waiting. Those are joined into one `chunk` frame, with one `seq`, just
before the agent would wait for the network again: no timer, no added delay for
a delta that came alone, and fewer frames (each with its JSON, its fan-out and
its WebSocket frame) exactly when the process is the bottleneck.

The join happens in the turn, before the seq is given, so every socket and the
replay log see the same frames. `flush_before_wait` wraps the agent's event
stream: the turn buffers chunk text, and the text goes out the moment the
agent's next step suspends (or before any other event, which the turn flushes
itself).
"""


class flush_before_wait:
    """`async for event in flush_before_wait(events, flush, waiting)`: the events of
    `events`, with `await flush()` run whenever `waiting()` is true and the next event is
    not ready yet (the agent's step is about to suspend).

    The agent's step runs in the turn's own task up to its first suspension; the flush
    runs there too, then the step waits on what it was about to wait on. A cancellation
    reaches the agent's step as it would without the wrapper.
    """

    __slots__ = ("_events", "_flush", "_waiting")

    def __init__(self, events, flush, waiting):
        self._events = events.__aiter__()
        self._flush = flush
        self._waiting = waiting

    def __aiter__(self):
        return self

    def __anext__(self):
        return _Step(self._events.__anext__(), self._flush, self._waiting)


class _Step:
    """One `__anext__` of the agent's stream, flushing before its first suspension."""

    __slots__ = ("_step", "_flush", "_waiting")

    def __init__(self, step, flush, waiting):
        self._step = step
        self._flush = flush
        self._waiting = waiting

    def __await__(self):
        step = self._step.__await__()
        try:
            signal = step.send(None)
        except StopIteration as stop:  # the next event was ready: nothing waits
            return stop.value
        if self._waiting():
            try:
                yield from self._flush().__await__()
            except BaseException as exc:  # cancelled while flushing: the agent's step gets it
                try:
                    signal = step.throw(exc)
                except StopIteration as stop:
                    return stop.value
        # From here on, as `yield from step` would, with its first suspension already taken.
        while True:
            try:
                value = yield signal
            except GeneratorExit:
                step.close()
                raise
            except BaseException as exc:
                try:
                    signal = step.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    signal = step.send(value)
                except StopIteration as stop:
                    return stop.value
