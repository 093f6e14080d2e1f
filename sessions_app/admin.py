"""Django admin for whoever runs the gateway: history, devices, the audit trail, usage.

Almost everything here is read-only: sessions change through the chat socket,
devices through pairing. The writes an operator may make (rename a session,
reset a stuck one, revoke a device) go through the services, like every other
write. No page shows a token, its hash or a pairing code.
"""

import json

from django.contrib import admin, messages
from django.http import HttpResponse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.http import content_disposition_header

from sessions_app import exports, selectors, services
from sessions_app.clients import client_from_request
from sessions_app.models import AuditEvent, ChatSession, MemoryNote, Message, PairedDevice, UsageRecord
from sessions_app.pairing import device_revoke

PREVIEW_CHARS = 80


def _preview(text: str) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


class ReadOnlyAdmin(admin.ModelAdmin):
    """A list and a detail page to look at, nothing to add, change or delete."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


# --- sessions ------------------------------------------------------------------


class MessageInline(admin.TabularInline):
    """A session's conversation, in order, read-only."""

    model = Message
    fields = ("seq", "role", "text", "details", "created_at")
    readonly_fields = fields
    ordering = ("seq",)
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="content")
    def text(self, message):
        return format_html('<div style="white-space: pre-wrap; max-width: 70em">{}</div>',
                           message.content)

    @admin.display(description="tool calls, results, thinking")
    def details(self, message):
        data = message.data or {}
        lines = []
        if data.get("thinking"):
            lines.append(("thinking", _preview(data["thinking"])))
        for call in data.get("tool_calls") or ():
            lines.append((f"call {call.get('name', '?')}", call.get("arguments", "")))
        if message.role == Message.Role.TOOL:
            lines.append(("result of", data.get("name", "")
                          + (" (error)" if data.get("is_error") else "")))
        if data.get("stopped"):
            lines.append(("stopped", "the reply was cut short"))
        return format_html_join("", "<div><strong>{}</strong> <code>{}</code></div>", lines)


@admin.register(ChatSession)
class ChatSessionAdmin(admin.ModelAdmin):
    list_display = ("title", "id", "state", "message_count", "last_activity", "cost")
    list_filter = ("state", "created_at", "last_activity")
    search_fields = ("id", "name", "messages__content")
    date_hierarchy = "last_activity"
    fields = ("id", "name", "state", "turn_id", "turn_started_at", "lease_expires_at",
              "turn_owner", "created_at", "last_activity", "message_count", "cost")
    readonly_fields = tuple(f for f in fields if f != "name")
    inlines = [MessageInline]
    actions = ["export_markdown", "reset_to_idle"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(cost_usd=selectors.session_cost_expression())

    def has_add_permission(self, request):
        return False  # sessions begin on the chat socket

    @admin.display(description="session", ordering="name")
    def title(self, session):
        return session.name or session.pk

    @admin.display(description="cost (USD)", ordering="cost_usd")
    def cost(self, session):
        cost = getattr(session, "cost_usd", None)
        return "—" if cost is None else f"{cost:.4f}"

    def save_model(self, request, obj, form, change):
        # Only the name is editable; saving the whole row could undo a turn's
        # concurrent writes (state, message_count).
        services.session_rename(session_id=obj.pk, name=obj.name)
        # The admin's log entry names the object: let it name what was stored (scrubbed).
        stored = selectors.session_get(session_id=obj.pk)
        if stored is not None:
            obj.name = stored.name

    @admin.action(description="Export selected sessions as Markdown", permissions=["view"])
    def export_markdown(self, request, queryset):
        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        response = HttpResponse(
            exports.sessions_markdown(queryset.order_by("-last_activity")),
            content_type="text/markdown; charset=utf-8",
        )
        response["Content-Disposition"] = content_disposition_header(
            as_attachment=True, filename=f"construct-sessions-{stamp}.md"
        )
        return response

    @admin.action(description="Reset stuck sessions to idle", permissions=["change"])
    def reset_to_idle(self, request, queryset):
        count = sum(services.session_reset(session_id=pk) for pk in queryset.values_list("pk", flat=True))
        self.message_user(request, f"{count} session(s) reset to idle.", messages.SUCCESS)


# --- devices and the audit trail -------------------------------------------------


@admin.register(PairedDevice)
class PairedDeviceAdmin(ReadOnlyAdmin):
    # Never token_hash: listing fields explicitly keeps it off every page.
    list_display = ("__str__", "token_hint", "client", "paired_at", "last_seen", "revoked_at")
    list_filter = (("revoked_at", admin.EmptyFieldListFilter), "paired_at")
    search_fields = ("name", "client", "token_hint")
    fields = ("name", "token_hint", "client", "paired_at", "last_seen", "revoked_at")
    readonly_fields = fields
    actions = ["revoke"]

    def has_revoke_permission(self, request):
        return request.user.has_perm("sessions_app.change_paireddevice")

    @admin.action(description="Revoke selected devices (their tokens stop working)",
                  permissions=["revoke"])
    def revoke(self, request, queryset):
        client = client_from_request(request)
        count = sum(device_revoke(device_id=pk, client=client)
                    for pk in queryset.values_list("pk", flat=True))
        self.message_user(request, f"{count} device(s) revoked.", messages.SUCCESS)


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ("id", "created_at", "kind", "client", "detail_text")
    list_filter = ("kind", "created_at")
    search_fields = ("client",)
    fields = ("id", "created_at", "kind", "client", "detail_text", "prev_hash", "hash")
    readonly_fields = fields

    @admin.display(description="detail")
    def detail_text(self, event):
        return json.dumps(event.detail, ensure_ascii=False, sort_keys=True)


# --- usage and memory ----------------------------------------------------------


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "model", "session", "turn_id", "input_tokens", "output_tokens",
                    "cost_usd")
    list_filter = ("model", "created_at")
    search_fields = ("model", "session__id", "turn_id")
    list_select_related = ("session",)


@admin.register(MemoryNote)
class MemoryNoteAdmin(ReadOnlyAdmin):
    list_display = ("preview", "tags", "session", "created_at")
    list_filter = ("created_at",)
    search_fields = ("content",)
    list_select_related = ("session",)

    def has_delete_permission(self, request, obj=None):
        # An operator may remove a note the agent should not remember.
        return super(ReadOnlyAdmin, self).has_delete_permission(request, obj)

    @admin.display(description="content")
    def preview(self, note):
        return _preview(note.content)
