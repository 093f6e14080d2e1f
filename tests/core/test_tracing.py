"""Tracing is set up only when the OTEL_* variables ask for it (construct_core.tracing).

What a traced turn exports is checked over the wire in tests/e2e/test_tracing_e2e.py.
"""

import os
import subprocess
import sys

import pytest

from construct_core import tracing
from tests.support.daphne import REPO_ROOT, server_env


@pytest.mark.parametrize("environ, wanted", [
    ({}, False),
    ({"OTEL_SERVICE_NAME": "gw"}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SDK_DISABLED": "true"}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
])
def test_tracing_is_wanted_only_with_an_endpoint(environ, wanted):
    assert tracing.tracing_wanted(environ) is wanted


def test_spans_are_no_ops_until_tracing_starts():
    assert not tracing.tracing_on()
    with tracing.span("turn", {"a": 1}) as span:
        assert span is None
    assert tracing.span_start("chat m", {}) is None
    tracing.span_end(None, {"b": 2}, error="X")
    tracing.set_attributes({"c": 3})


def test_without_otel_variables_nothing_of_opentelemetry_is_set_up():
    """In a fresh process: the server's start-up (settings, apps, the turn engine, tracing_begin) loads no SDK."""
    env = server_env({name: None for name in os.environ if name.startswith("OTEL_")})
    script = (
        "import sys, django; django.setup()\n"
        "import chat.turns, chat.agent.loop, chat.consumers\n"
        "from construct_site import startup\n"
        "from construct_core import tracing\n"
        "print(startup.tracing_begin(), tracing.tracing_on(),\n"
        "      sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[0] == "False False []"


def test_with_an_endpoint_the_sdk_is_set_up_once():
    """The same start-up with OTEL_EXPORTER_OTLP_ENDPOINT: an SDK tracer provider, named
    construct-gateway unless OTEL_SERVICE_NAME says otherwise."""
    script = (
        "import django; django.setup()\n"
        "from opentelemetry import trace\n"
        "from construct_site import startup\n"
        "from construct_core import tracing\n"
        "print(startup.tracing_begin(), startup.tracing_begin(), tracing.tracing_on(),\n"
        "      type(trace.get_tracer_provider()).__module__,\n"
        "      trace.get_tracer_provider().resource.attributes['service.name'])\n"
        "tracing.tracing_stop()\n"
    )
    for service, expected in ((None, "construct-gateway"), ("gw-blue", "gw-blue")):
        env = server_env({**{name: None for name in os.environ if name.startswith("OTEL_")},
                          "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_SERVICE_NAME": service})
        result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env,
                                capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert result.returncode == 0, result.stderr
        assert result.stdout.split("\n")[0] == f"True True True opentelemetry.sdk.trace {expected}"
