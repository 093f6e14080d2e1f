"""The gateway's Prometheus metrics: each defined once here, and their text for `GET /metrics`.

The turn engine and the socket record them; nothing here knows Django. With
`PROMETHEUS_MULTIPROC_DIR` set (deploy/supervise.py sets it for its
processes), prometheus_client keeps each process's values in files there and
`exposition` sums them over the processes: counters and histograms over every
process that ever ran, gauges over the live ones only ("livesum"; a process
that died is dropped by `multiprocess.mark_process_dead`). The directory must
be set before prometheus_client is imported, and emptied between runs.

No label carries a secret or free text: models are the configured ids, tools
the registered names (anything else is "unknown"), codes the stable error codes.
"""

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest,
    multiprocess,
)

TURN_OUTCOMES = ("done", "stopped", "error", "interrupted")
UNKNOWN_TOOL = "unknown"

TURNS = Counter("construct_turns_total", "Turns that ended, by how", ["outcome"])
TURN_DURATION = Histogram(
    "construct_turn_duration_seconds", "From a turn's start (it holds the session) to its end",
    buckets=(0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
TIME_TO_FIRST_CHUNK = Histogram(
    "construct_time_to_first_chunk_seconds", "From a turn's start to its first streamed chunk",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
CHUNKS = Counter("construct_chunks_total", "Chunks of answer text streamed")
TOKENS = Counter("construct_tokens_total", "Tokens the providers counted, by direction and model",
                 ["direction", "model"])
COST_USD = Counter("construct_cost_usd_total", "What the tokens cost at CONSTRUCT_PRICES, in USD",
                   ["model"])
OPEN_SOCKETS = Gauge("construct_open_sockets", "Chat sockets open", multiprocess_mode="livesum")
RUNNING_TURNS = Gauge("construct_running_turns", "Turns running", multiprocess_mode="livesum")
# Plus, as /metrics is read, the messages a draining process handed on (kept in the database).
QUEUED_MESSAGES = Gauge("construct_queued_messages", "Messages waiting for their session's running turn",
                        multiprocess_mode="livesum")
ERRORS = Counter("construct_errors_total", "Error frames sent, by code", ["code"])
TOOL_CALLS = Counter("construct_tool_calls_total", "Tool calls answered, by tool and outcome (ok, error, "
                     "denied)", ["tool", "outcome"])

for _outcome in TURN_OUTCOMES:  # every outcome shows, at 0 until it happens
    TURNS.labels(_outcome)


def turn_ended(outcome: str, seconds: float | None = None) -> None:
    """A turn ended as `outcome` (one of TURN_OUTCOMES), after `seconds` when this process ran it."""
    TURNS.labels(outcome).inc()
    if seconds is not None:
        TURN_DURATION.observe(seconds)


def error_sent(frame: dict) -> None:
    """Count `frame` if it is an error frame (called where frames leave)."""
    if frame.get("type") == "error":
        ERRORS.labels(str(frame.get("code") or "")).inc()


def tokens_used(model: str, input_tokens: int, output_tokens: int, cost_usd: float) -> None:
    TOKENS.labels("input", model).inc(input_tokens)
    TOKENS.labels("output", model).inc(output_tokens)
    COST_USD.labels(model).inc(cost_usd)


def exposition(added: dict[str, float] | None = None) -> tuple[bytes, str]:
    """(body, content type) of the metrics: every process's, summed, in multiprocess mode.

    `added`: values to add to unlabelled gauges by name, counted once for the
    whole gateway rather than per process (the messages kept in the database).
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    if added:
        registry = _Added(registry, added)
    return generate_latest(registry), CONTENT_TYPE_LATEST


class _Added:
    """A registry's metrics with `added` summed into the samples of those names."""

    def __init__(self, registry, added: dict[str, float]):
        self.registry = registry
        self.added = added

    def collect(self):
        for metric in self.registry.collect():
            if metric.name in self.added:
                metric.samples = [
                    sample._replace(value=sample.value + self.added[metric.name])
                    if sample.name == metric.name and not sample.labels else sample
                    for sample in metric.samples
                ]
            yield metric
