"""`file_read`, `file_write` and `file_list`: confined to the workspace, size-capped.

A path is taken relative to the workspace, resolved with every symlink followed,
and refused unless the result is inside the resolved workspace: `..`, an absolute
path elsewhere and a symlink leading out all end up outside, so all are refused.
"""

import asyncio
import os
import stat
from pathlib import Path

from chat.agent.tools.base import Tool, ToolContext, ToolFailed
from construct_core.redaction import scrub

MAX_READ_BYTES = 256 * 1024
MAX_WRITE_BYTES = 1024 * 1024
MAX_LIST_ENTRIES = 500


def workspace_root(ctx: ToolContext) -> Path:
    """The resolved workspace of this call, created if missing."""
    if not ctx.workspace:
        raise ToolFailed("no workspace is configured")
    root = Path(ctx.workspace).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return root


def inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def confine(raw, root: Path) -> Path:
    """The resolved path `raw` names in the workspace; raises ToolFailed outside it."""
    if not isinstance(raw, str) or not raw.strip():
        raise ToolFailed("path must be a non-empty string")
    if "\x00" in raw:
        raise ToolFailed("path contains a NUL byte")
    resolved = (root / raw).resolve(strict=False)
    if not inside(resolved, root):
        raise ToolFailed(f"path {raw!r} is outside the workspace; paths are relative to the workspace")
    return resolved


def _shown(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix() or "."


def _read(path: Path, root: Path) -> str:
    # O_NOFOLLOW: a symlink swapped in since `confine` resolved the path is refused, not followed.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ToolFailed(f"no such file: {_shown(path, root)}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        if stat.S_ISDIR(info.st_mode):
            raise ToolFailed(f"{_shown(path, root)} is a folder; use file_list")
        raise ToolFailed(f"{_shown(path, root)} is not a regular file")
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(MAX_READ_BYTES)
    if b"\x00" in data:
        raise ToolFailed(f"{_shown(path, root)} is a binary file ({info.st_size} bytes)")
    text = data.decode("utf-8", errors="replace")
    if info.st_size > MAX_READ_BYTES:
        text += f"\n[file is {info.st_size} bytes; only the first {MAX_READ_BYTES} are shown]"
    return text


def _write(path: Path, root: Path, content: str) -> str:
    # A key a provider echoes into a file would come back in pieces (head -c):
    # it is never written.
    data = scrub(content).encode("utf-8")
    if len(data) > MAX_WRITE_BYTES:
        raise ToolFailed(f"content is {len(data)} bytes; at most {MAX_WRITE_BYTES} may be written")
    if path == root:
        raise ToolFailed("path names the workspace itself, not a file")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    except IsADirectoryError:
        raise ToolFailed(f"{_shown(path, root)} is a folder") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return f"Wrote {len(data)} bytes to {_shown(path, root)}"


def _list(path: Path, root: Path) -> str:
    if not path.exists():
        raise ToolFailed(f"no such folder: {_shown(path, root)}")
    if not path.is_dir():
        raise ToolFailed(f"{_shown(path, root)} is a file; use file_read")
    lines = []
    entries = sorted(path.iterdir(), key=lambda entry: entry.name)
    for entry in entries[:MAX_LIST_ENTRIES]:
        if entry.is_symlink():
            lines.append(f"{entry.name} -> (link)")
        elif entry.is_dir():
            lines.append(f"{entry.name}/")
        else:
            lines.append(f"{entry.name} ({entry.stat().st_size} bytes)")
    if len(entries) > MAX_LIST_ENTRIES:
        lines.append(f"[{len(entries) - MAX_LIST_ENTRIES} more entries not shown]")
    header = f"{_shown(path, root)}: {len(entries)} entries"
    return "\n".join([header, *lines])


async def file_read(args: dict, ctx: ToolContext) -> str:
    root = workspace_root(ctx)
    return await asyncio.to_thread(_read, confine(args.get("path"), root), root)


async def file_write(args: dict, ctx: ToolContext) -> str:
    content = args.get("content")
    if not isinstance(content, str):
        raise ToolFailed("content must be a string")
    root = workspace_root(ctx)
    return await asyncio.to_thread(_write, confine(args.get("path"), root), root, content)


async def file_list(args: dict, ctx: ToolContext) -> str:
    root = workspace_root(ctx)
    raw = args.get("path")
    path = root if raw in (None, "", ".") else confine(raw, root)
    return await asyncio.to_thread(_list, path, root)


def _path_schema(description: str) -> dict:
    return {"type": "string", "description": description}


def file_tools() -> list[Tool]:
    return [
        Tool(
            "file_read",
            f"Read a text file of the workspace (at most {MAX_READ_BYTES // 1024} KB are returned).",
            {"type": "object", "properties": {"path": _path_schema("relative to the workspace, e.g. notes/a.txt")},
             "required": ["path"]},
            file_read,
        ),
        Tool(
            "file_write",
            f"Write a text file in the workspace, creating its folders (at most {MAX_WRITE_BYTES // 1024} KB).",
            {"type": "object",
             "properties": {"path": _path_schema("relative to the workspace, e.g. notes/a.txt"),
                            "content": {"type": "string", "description": "the whole new content"}},
             "required": ["path", "content"]},
            file_write,
        ),
        Tool(
            "file_list",
            "List a folder of the workspace (the workspace itself when no path is given).",
            {"type": "object", "properties": {"path": _path_schema("relative to the workspace; optional")}},
            file_list,
        ),
    ]
