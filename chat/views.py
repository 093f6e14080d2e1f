"""The browser chat page: one Django template; everything else happens in its scripts."""

from django.shortcuts import render
from django.views.decorators.http import require_safe

from chat.protocol import PAGE_CONTEXTS

PAGE_CONTEXT_LABELS = {
    "agent_pool": "Agent pool",
    "agent_teams": "Agent teams",
    "skills": "Skills",
    "workflows": "Workflows",
    "canvas": "Canvas",
}

# Defence in depth behind the sanitiser: no inline or foreign script can run,
# the page talks only to its own origin (HTTP and the socket), and no other
# site may frame it. Inline styles stay allowed for what render_canvas shows
# in its sandboxed frame, which inherits this policy.
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self' 'unsafe-inline'",
    # blob: for the thumbnails of attached images, fetched with the token (the
    # download needs it) and shown from memory.
    "img-src 'self' data: blob:",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])


@require_safe
def index(request):
    """GET /: the chat page. It asks for pairing itself, so it needs no authentication."""
    contexts = [("", "Chat")] + [(name, PAGE_CONTEXT_LABELS.get(name, name)) for name in PAGE_CONTEXTS]
    response = render(request, "chat/index.html", {"page_contexts": contexts})
    response["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response["Referrer-Policy"] = "no-referrer"
    return response
