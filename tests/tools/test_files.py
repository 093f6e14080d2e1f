"""file_read, file_write, file_list: confined to the workspace."""

import os

import pytest

from chat.agent.tools import files
from chat.agent.tools.base import ToolContext, ToolRegistry


@pytest.fixture
def workspace(tmp_path):
    return tmp_path / "workspace"


@pytest.fixture
def call(workspace):
    registry = ToolRegistry(files.file_tools())
    ctx = ToolContext(session_id="s1", workspace=workspace)

    async def call(name, **args):
        import json

        return await registry.call(name, json.dumps(args), ctx)

    return call


async def test_write_creates_folders_and_read_returns_the_text(call, workspace):
    assert not workspace.exists()
    output, is_error = await call("file_write", path="notes/deep/a.txt", content="héllo\nworld")
    assert (output, is_error) == ("Wrote 12 bytes to notes/deep/a.txt", False)
    assert (workspace / "notes/deep/a.txt").read_text() == "héllo\nworld"
    assert await call("file_read", path="notes/deep/a.txt") == ("héllo\nworld", False)


async def test_list_shows_folders_and_sizes(call, workspace):
    await call("file_write", path="b.txt", content="12345")
    await call("file_write", path="sub/c.txt", content="x")
    output, is_error = await call("file_list")
    assert not is_error
    assert output.splitlines() == [".: 2 entries", "b.txt (5 bytes)", "sub/"]
    output, _ = await call("file_list", path="sub")
    assert output.splitlines() == ["sub: 1 entries", "c.txt (1 bytes)"]


async def test_an_absolute_path_inside_the_workspace_is_fine(call, workspace):
    await call("file_write", path="a.txt", content="in")
    assert await call("file_read", path=str(workspace / "a.txt")) == ("in", False)


@pytest.mark.parametrize("path", ["../../etc/passwd", "/etc/passwd", "notes/../../outside.txt", ".."])
async def test_paths_outside_are_refused(call, workspace, path):
    for name, args in (("file_read", {}), ("file_write", {"content": "x"}), ("file_list", {})):
        output, is_error = await call(name, path=path, **args)
        assert is_error, (name, output)
        assert "outside the workspace" in output
    assert not (workspace.parent / "outside.txt").exists()


async def test_a_symlink_out_of_the_workspace_is_refused(call, workspace, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    outside_dir = tmp_path / "elsewhere"
    outside_dir.mkdir()
    workspace.mkdir()
    os.symlink(secret, workspace / "link.txt")
    os.symlink(outside_dir, workspace / "linkdir")
    for name, args in (
        ("file_read", {"path": "link.txt"}),
        ("file_write", {"path": "link.txt", "content": "overwritten"}),
        ("file_write", {"path": "linkdir/new.txt", "content": "x"}),
        ("file_list", {"path": "linkdir"}),
    ):
        output, is_error = await call(name, **args)
        assert is_error and "outside the workspace" in output, (name, output)
    assert secret.read_text() == "top secret"
    assert list(outside_dir.iterdir()) == []


async def test_a_symlink_inside_the_workspace_is_followed(call, workspace):
    await call("file_write", path="real.txt", content="real")
    os.symlink(workspace / "real.txt", workspace / "alias.txt")
    assert await call("file_read", path="alias.txt") == ("real", False)


async def test_size_caps(call, workspace, monkeypatch):
    monkeypatch.setattr(files, "MAX_WRITE_BYTES", 10)
    output, is_error = await call("file_write", path="big.txt", content="x" * 11)
    assert is_error and "at most 10" in output
    assert not (workspace / "big.txt").exists()
    monkeypatch.setattr(files, "MAX_READ_BYTES", 4)
    (workspace / "long.txt").write_text("abcdefgh")
    output, is_error = await call("file_read", path="long.txt")
    assert not is_error
    assert output.startswith("abcd\n[file is 8 bytes; only the first 4")


async def test_read_errors_are_results(call, workspace):
    assert await call("file_read", path="missing.txt") == ("Error: no such file: missing.txt", True)
    (workspace / "dir").mkdir(parents=True)
    output, is_error = await call("file_read", path="dir")
    assert is_error and "is a folder" in output
    (workspace / "bin.dat").write_bytes(b"\x00\x01\x02")
    output, is_error = await call("file_read", path="bin.dat")
    assert is_error and "binary" in output
    output, is_error = await call("file_write", path="x.txt", content=5)
    assert is_error and "content must be a string" in output


async def test_a_key_the_provider_echoes_is_never_written_to_the_workspace(call, workspace):
    from construct_core.redaction import REDACTED, register_secret

    key = "sk-written-0123456789abcdef"
    register_secret(key)
    output, is_error = await call("file_write", path="leak.txt", content=f"key={key}\n")
    assert not is_error
    assert (workspace / "leak.txt").read_text() == f"key={REDACTED}\n"
