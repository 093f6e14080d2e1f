"""`render_canvas` and `clear_canvas`: content for the browser's Live Canvas.

The tool itself only checks and confirms: the browser renders the arguments of
the `tool_call` event (into a sandboxed frame), so they go out exactly as the
contract names them.
"""

import re

from chat.agent.tools.base import Tool, ToolContext, ToolFailed

CONTENT_TYPES = ("html", "svg", "markdown", "text")
MAX_CANVAS_CHARS = 256_000
_CANVAS_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


def _canvas_id(args: dict) -> str:
    canvas_id = args.get("canvas_id", "default")
    if not isinstance(canvas_id, str) or not _CANVAS_ID.match(canvas_id):
        raise ToolFailed("canvas_id must be 1 to 64 letters, digits, '_', '-' or '.'")
    return canvas_id


async def render_canvas(args: dict, ctx: ToolContext) -> str:
    canvas_id = _canvas_id(args)
    content_type = args.get("content_type")
    if content_type not in CONTENT_TYPES:
        raise ToolFailed(f"content_type must be one of {', '.join(CONTENT_TYPES)}")
    content = args.get("content")
    if not isinstance(content, str):
        raise ToolFailed("content must be a string")
    if len(content) > MAX_CANVAS_CHARS:
        raise ToolFailed(f"content is {len(content)} characters; at most {MAX_CANVAS_CHARS}")
    return f"Rendered {len(content)} characters of {content_type} on canvas {canvas_id!r}."


async def clear_canvas(args: dict, ctx: ToolContext) -> str:
    return f"Cleared canvas {_canvas_id(args)!r}."


def canvas_tools() -> list[Tool]:
    canvas_id = {"type": "string", "description": "which canvas; 'default' unless you keep several"}
    return [
        Tool(
            "render_canvas",
            "Show content on the user's Live Canvas, replacing what the canvas showed.",
            {"type": "object",
             "properties": {"canvas_id": canvas_id,
                            "content_type": {"type": "string", "enum": list(CONTENT_TYPES)},
                            "content": {"type": "string", "description": "the whole content to show"}},
             "required": ["canvas_id", "content_type", "content"]},
            render_canvas,
        ),
        Tool(
            "clear_canvas",
            "Clear a canvas of the Live Canvas page.",
            {"type": "object", "properties": {"canvas_id": canvas_id}, "required": ["canvas_id"]},
            clear_canvas,
        ),
    ]
