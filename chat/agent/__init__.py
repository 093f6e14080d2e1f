"""The agent: a provider, tools and a history in; typed events out.

Imports neither Django, Channels nor sessions_app (an import contract holds it):
the loop (loop.py), one set of event types (events.py), prompts, providers/,
tools/ and MCP servers (mcp.py). What it needs of the deployment (settings, a
place to keep memory notes) its caller, the turn engine, hands it.
"""
