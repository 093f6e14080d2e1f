"""CONSTRUCT_LOG_FORMAT=json over a real daphne: every line it writes to stderr is one JSON object.

A turn's start and end lines carry its session, turn, owner, model, outcome
and duration; lines logged inside the turn carry its session and turn ids;
a bad value stops start-up naming the variable; secrets stay redacted.
"""

import json
import subprocess
import sys

from websockets.asyncio.client import connect

from tests.e2e.conftest import FAKE_KEY, gateway_env, pair, wait_until
from tests.e2e.test_chat_e2e import frames_until, session_start, ws_url
from tests.support.daphne import DEFAULT_APP, REPO_ROOT, server_env


def daphne_with_stderr(stderr_path):
    """A DaphneServer `command`: daphne as usual, its stderr alone to `stderr_path`."""
    def command(port):
        return ["sh", "-c", 'exec "$0" -m daphne -b 127.0.0.1 -p "$1" "$2" 2>"$3"',
                sys.executable, str(port), DEFAULT_APP, str(stderr_path)]
    return command


def json_lines(path) -> list[dict]:
    lines = path.read_text().splitlines()
    assert lines, "daphne logged nothing"
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}") from None
    return parsed


async def test_json_lines_with_the_turn_start_and_end(daphne_factory, mock_llm_process, tmp_path):
    stderr = tmp_path / "stderr.log"
    server = daphne_factory(env=gateway_env(mock_llm_process, CONSTRUCT_LOG_FORMAT="json"),
                            command=daphne_with_stderr(stderr))
    token = pair(server)
    async with connect(ws_url(server, "logged", token=token)) as ws:
        await session_start(ws)
        await ws.send(json.dumps({"type": "message", "content": "hello there"}))
        done = (await frames_until(ws))[-1]
        # A failing turn logs a warning inside the turn; the provider echoes the key in its error.
        await ws.send(json.dumps({"type": "message", "content": "[[fail=401]] [[echo_key]]"}))
        failed = (await frames_until(ws))[-1]
    assert done["type"] == "done" and failed["type"] == "error"

    def ended(turn_id):
        return any(line.get("turn_id") == turn_id and "ended" in line["message"]
                   for line in json_lines(stderr))

    wait_until(lambda: ended(failed["turn_id"]), 10)
    lines = json_lines(stderr)
    for line in lines:
        assert {"time", "level", "logger", "message"} <= line.keys(), line
        assert FAKE_KEY not in json.dumps(line)
        assert token not in json.dumps(line)

    of_turn = [line for line in lines if line.get("turn_id") == done["turn_id"]]
    start = next(line for line in of_turn if "started" in line["message"])
    end = next(line for line in of_turn if "ended" in line["message"])
    for line in (start, end):
        assert line["level"] == "INFO"
        assert line["logger"] == "chat.turns.run"
        assert line["session_id"] == "logged"
        assert line["model"] == "mock-model"
        assert isinstance(line["user_id"], int)
    assert end["outcome"] == "done"
    assert isinstance(end["duration_ms"], int) and end["duration_ms"] >= 0
    assert start["time"] <= end["time"]

    of_failed = [line for line in lines if line.get("turn_id") == failed["turn_id"]]
    assert [line["outcome"] for line in of_failed if "ended" in line["message"]] == ["error"]
    warning = next(line for line in of_failed if line["level"] == "WARNING")
    assert warning["session_id"] == "logged" and "failed" in warning["message"]


def test_a_bad_log_format_stops_start_up_naming_the_variable():
    result = subprocess.run(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", "0", DEFAULT_APP],
        cwd=REPO_ROOT, env=server_env({"CONSTRUCT_LOG_FORMAT": "yaml"}), capture_output=True,
        text=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    assert result.returncode != 0
    assert "CONSTRUCT_LOG_FORMAT" in result.stderr and "'yaml'" in result.stderr


def test_python_warnings_are_json_lines_too(tmp_path):
    script = "import django, warnings; django.setup(); warnings.warn('an old way')"
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT,
        env=server_env({"CONSTRUCT_LOG_FORMAT": "json"}), capture_output=True, text=True,
        timeout=60, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    [line] = [json.loads(line) for line in result.stderr.splitlines()]
    assert line["logger"] == "py.warnings" and line["level"] == "WARNING"
    assert "an old way" in line["message"]
