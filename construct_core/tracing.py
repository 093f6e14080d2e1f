"""OpenTelemetry traces when the standard OTEL_* variables ask for them, and nothing otherwise.

`tracing_start` sets the SDK up once per process, at start-up: an OTLP/HTTP
(protobuf) exporter behind a batch processor, configured by the SDK's own
variables (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_HEADERS,
OTEL_BSP_SCHEDULE_DELAY, OTEL_TRACES_SAMPLER, OTEL_RESOURCE_ATTRIBUTES, ...).
Until it has, `span` and `span_start` return at once, and nothing of
OpenTelemetry is imported: a gateway without those variables pays nothing.

Spans carry names, ids, models, counts and outcomes only: never prompt text,
tool arguments or results, a key or a token.
"""

import contextlib
import os

SERVICE_NAME = "construct-gateway"
# Either of these (the second for traces only) sends traces somewhere.
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")

_tracer = None  # the SDK's tracer, once tracing_start has set it up
_provider = None
_NO_SPAN = contextlib.nullcontext()


def tracing_wanted(environ=None) -> bool:
    """Whether the environment asks for traces: an OTLP endpoint, and the SDK not switched off."""
    environ = os.environ if environ is None else environ
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return any(environ.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def tracing_start(environ=None) -> bool:
    """Set up the tracer provider and its exporter if the environment asks; whether it did.

    Call once per process, before the first turn. The provider flushes its
    spans at exit (the SDK registers that); `tracing_stop` does it sooner.
    """
    global _tracer, _provider
    if _tracer is not None:
        return True
    if not tracing_wanted(environ):
        return False
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create()  # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _provider = provider
    _tracer = trace.get_tracer("construct")
    return True


def tracing_stop() -> None:
    """Export the spans still queued and stop the exporter (at shutdown)."""
    global _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    _tracer = _provider = None


def tracing_on() -> bool:
    return _tracer is not None


def span(name: str, attributes: dict):
    """A context manager: a span that is the current one inside it (a no-op without tracing).

    For code that runs in one coroutine from start to end (a turn); an
    exception that leaves it marks the span as an error.
    """
    if _tracer is None:
        return _NO_SPAN
    # No exception event: its message could quote what a span must not hold.
    return _tracer.start_as_current_span(name, attributes=_clean(attributes), record_exception=False)


def span_start(name: str, attributes: dict):
    """A span, child of the current one but not made current; None without tracing.

    For work inside an async generator, which may be suspended and closed from
    elsewhere: end it with `span_end`.
    """
    if _tracer is None:
        return None
    return _tracer.start_span(name, attributes=_clean(attributes))


def span_end(span_, attributes: dict | None = None, *, error: str | None = None) -> None:
    """Add `attributes` to a span from `span_start` and end it; `error` (a type name) marks it failed."""
    if span_ is None:
        return
    if attributes:
        span_.set_attributes(_clean(attributes))
    if error is not None:
        from opentelemetry.trace import Status, StatusCode

        span_.set_attribute("error.type", error)
        span_.set_status(Status(StatusCode.ERROR))
    span_.end()


def set_attributes(attributes: dict, *, failed: bool = False) -> None:
    """Add attributes to the current span, and mark it failed if `failed` (no-op without tracing)."""
    if _tracer is None:
        return
    from opentelemetry import trace
    from opentelemetry.trace import Status, StatusCode

    current = trace.get_current_span()
    current.set_attributes(_clean(attributes))
    if failed:
        current.set_status(Status(StatusCode.ERROR))


def _clean(attributes: dict) -> dict:
    """Attributes without the None values (OpenTelemetry drops them with a warning)."""
    return {key: value for key, value in attributes.items() if value is not None}
