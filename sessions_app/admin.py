"""Django admin for whoever runs the gateway: users, history, devices, the audit trail, usage.

Almost everything here is read-only: sessions change through the chat socket,
devices through pairing. The writes an operator may make (rename a session,
reset a stuck one, revoke a device, issue a pairing code for a user) go through
the services, like every other write; a user's quota is a plain row edited
inline. No page shows a token or its hash; a pairing code is shown once, on the
page that issued it, and never stored or logged in clear.
"""

import json
from decimal import Decimal

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.core.exceptions import PermissionDenied
from django.core.validators import MinValueValidator
from django.db.models import Count, DecimalField, F, IntegerField, OuterRef, Q, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.http import Http404, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from django.utils.html import format_html, format_html_join
from django.utils.http import content_disposition_header

from asgiref.sync import async_to_sync

from construct_core.errors import ApprovalInvalid
from sessions_app import attachments, budget, catalogue, events, exports, selectors, services
from sessions_app.clients import client_from_request
from sessions_app.models import (
    Attachment, AuditEvent, ChatSession, MemoryNote, Message, PairedDevice, ToolApproval,
    UsageRecord, UserQuota,
)
from sessions_app.pairing import CODE_TTL_SECONDS, device_revoke, pairing_code_issue

PREVIEW_CHARS = 80
# A message longer than this shows its beginning on the session's page, the rest a click away.
FOLD_CHARS = 1500


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
    """A session's conversation, every branch, in the order it was written, read-only."""

    model = Message
    fields = ("seq", "role", "place", "text", "details", "created_at")
    readonly_fields = fields
    ordering = ("seq",)
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(parent_seq=F("parent__seq"))

    @admin.display(description="follows")
    def place(self, message):
        """The message it follows (the conversation tree above shows the branches whole)."""
        seq = getattr(message, "parent_seq", None)
        return f"#{seq}" if seq is not None else "—"

    @admin.display(description="content")
    def text(self, message):
        # Spans, not divs: the admin puts a read-only value in a <p>, which a <div> would
        # break into empty paragraphs (tall empty rows).
        content = message.content or ""
        if len(content) <= FOLD_CHARS:
            return format_html('<span class="message-text">{}</span>', content)
        return format_html(
            '<span class="message-text content-preview">{}…</span>'
            '<details class="long-content"><summary>Show all {} characters</summary>'
            '<span class="message-text">{}</span></details>',
            content[:FOLD_CHARS], f"{len(content):,}", content)

    @admin.display(description="tool calls, results, thinking")
    def details(self, message):
        data = message.data or {}
        lines = []
        if data.get("model"):
            lines.append(("model", data["model"] + (f", reasoning {data['reasoning']}"
                                                    if data.get("reasoning") else "")))
        if isinstance(data.get("usage"), dict):
            usage = data["usage"]
            lines.append(("turn usage", f"{usage.get('input_tokens', 0)} in, {usage.get('output_tokens', 0)} "
                                        f"out, ${float(usage.get('cost_usd') or 0):.6f}"))
        if data.get("thinking"):
            lines.append(("thinking", _preview(data["thinking"])))
        for call in data.get("tool_calls") or ():
            lines.append((f"call {call.get('name', '?')}", call.get("arguments", "")))
        if message.role == Message.Role.TOOL:
            lines.append(("result of", data.get("name", "")
                          + (" (error)" if data.get("is_error") else "")))
        if data.get("stopped"):
            lines.append(("stopped", "the reply was cut short"))
        for ref in data.get("attachments") or ():
            if isinstance(ref, dict):
                lines.append(("attached", f"{ref.get('name')} ({ref.get('size')} bytes, {ref.get('mime')})"))
        return format_html('<span class="message-details">{}</span>', format_html_join(
            "", '<span class="detail"><strong>{}</strong> <code>{}</code></span>', lines))


def _conversation_tree(session: ChatSession) -> str:
    """Every message as the tree it is: a new version of a step (an edit, a regenerated answer)
    is indented one step further than the one before it, and the active branch is marked."""
    messages = selectors.session_messages(session_id=session.pk)
    if not messages:
        return "—"
    active = {m.pk for m in selectors.branch_messages(session_id=session.pk)}
    children: dict[int | None, list[Message]] = {}
    for message in messages:
        children.setdefault(message.parent_id, []).append(message)
    rows = []
    # Depth first, oldest version first; a straight conversation stays at the left margin.
    stack = [(message, i) for i, message in enumerate(children.get(None, []))][::-1]
    while stack:
        message, level = stack.pop()
        rows.append((f"{level * 1.5:g}", "branch-active" if message.pk in active else "",
                     "●" if message.pk in active else "○", message.seq, message.role,
                     _preview(message.content)))
        kids = children.get(message.pk, [])
        for index in range(len(kids) - 1, -1, -1):
            stack.append((kids[index], level + (1 if index else 0)))
    return format_html(
        '<div class="conversation-tree">{}</div><p class="help">● the active branch (what the model '
        "sees next); ○ other versions. Indented: a later version of the step above it.</p>",
        format_html_join("", '<div style="margin-left: {}em" class="{}">{} #{} <strong>{}</strong>: {}</div>',
                         rows),
    )


def _download_link(attachment: Attachment) -> str:
    url = reverse("admin:sessions_app_attachment_download", args=[attachment.pk])
    return format_html('<a href="{}" download>{}</a>', url, attachment.name)


def _attachments_table(session: ChatSession) -> str:
    """A session's attachments as a table: name (a download), type, size, when."""
    rows = attachments.attachment_list(session_id=session.pk)
    if not rows:
        return "—"
    body = format_html_join("", "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>", (
        (_download_link(a), a.mime, f"{a.size:,} bytes", timezone.localtime(a.created_at)
         .strftime("%Y-%m-%d %H:%M:%S")) for a in rows
    ))
    return format_html('<table class="attachments"><thead><tr><th>file</th><th>type</th><th>size</th>'
                       "<th>uploaded</th></tr></thead><tbody>{}</tbody></table>", body)


class SessionModelFilter(admin.SimpleListFilter):
    """Sessions by the model their turns use: one that chose none (or one no longer listed)
    uses the default, the first in the list."""

    title = "model"
    parameter_name = "model"

    def lookups(self, request, model_admin):
        return [(choice.id, choice.label) for choice in catalogue.model_list()]

    def queryset(self, request, queryset):
        value = self.value()
        listed = [choice.id for choice in catalogue.model_list()]
        if value is None or value not in listed:
            return queryset
        if value == listed[0]:
            return queryset.exclude(model__in=listed[1:])
        return queryset.filter(model=value)


@admin.register(ChatSession)
class ChatSessionAdmin(admin.ModelAdmin):
    list_display = ("title", "id", "user", "state", "model_used", "message_count", "last_activity", "cost")
    list_filter = (("user", admin.RelatedOnlyFieldListFilter), "state", SessionModelFilter, "created_at",
                   "last_activity")
    search_fields = ("id", "name", "messages__content")
    date_hierarchy = "last_activity"
    fields = ("id", "name", "user", "state", "model_used", "turn_id", "turn_started_at",
              "lease_expires_at", "turn_owner", "created_at", "last_activity", "message_count", "cost",
              "attached_files", "tree")
    readonly_fields = tuple(f for f in fields if f != "name")
    list_select_related = ("user",)
    inlines = [MessageInline]
    actions = ["export_markdown", "reset_to_idle"]

    def get_queryset(self, request):
        sessions = super().get_queryset(request).annotate(cost_usd=selectors.session_cost_expression())
        match = request.resolver_match
        if match is not None and match.url_name == "sessions_app_chatsession_changelist":
            # The list shows conversations, as the chat's own list does; a session without a
            # message (an upload never sent) still opens by its address, from its files' page.
            sessions = selectors.sessions_with_messages(sessions)
        return sessions

    def has_add_permission(self, request):
        return False  # sessions begin on the chat socket

    @admin.display(description="session", ordering="name")
    def title(self, session):
        return session.name or session.pk

    @admin.display(description="model", ordering="model")
    def model_used(self, session):
        """The model of its next turn; one it did not choose is marked as the default."""
        model = catalogue.model_of_session(session.model).id
        return model if session.model == model else f"{model} (default)"

    @admin.display(description="conversation tree")
    def tree(self, session):
        return _conversation_tree(session)

    @admin.display(description="attachments")
    def attached_files(self, session):
        return _attachments_table(session)

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


@admin.register(Attachment)
class AttachmentAdmin(ReadOnlyAdmin):
    """Every session's attachments; each downloads (never shown in place). Deleting one
    deletes its file."""

    list_display = ("name", "session", "mime", "size", "created_at", "download")
    list_filter = ("mime", "created_at")
    search_fields = ("name", "session__id", "id")
    fields = ("id", "name", "session", "mime", "size", "created_at", "download")
    readonly_fields = fields
    list_select_related = ("session",)

    def has_delete_permission(self, request, obj=None):
        # An operator may remove a file nobody should keep.
        return super(ReadOnlyAdmin, self).has_delete_permission(request, obj)

    @admin.display(description="download")
    def download(self, attachment):
        return _download_link(attachment)

    def get_urls(self):
        return [
            path("<str:attachment_id>/download/", self.admin_site.admin_view(self.download_view),
                 name="sessions_app_attachment_download"),
            *super().get_urls(),
        ]

    def download_view(self, request, attachment_id):
        if not self.has_view_permission(request):
            raise PermissionDenied
        response = attachments.attachment_download(get_object_or_404(Attachment, pk=attachment_id))
        if response is None:
            raise Http404("The attachment's file is gone")
        return response


# --- devices and the audit trail -------------------------------------------------


@admin.register(PairedDevice)
class PairedDeviceAdmin(ReadOnlyAdmin):
    # Never token_hash: listing fields explicitly keeps it off every page.
    list_display = ("__str__", "user", "token_hint", "client", "paired_at", "last_seen", "revoked_at")
    list_filter = (("user", admin.RelatedOnlyFieldListFilter),
                   ("revoked_at", admin.EmptyFieldListFilter), "paired_at")
    search_fields = ("name", "client", "token_hint", f"user__{get_user_model().USERNAME_FIELD}")
    fields = ("name", "user", "token_hint", "client", "paired_at", "last_seen", "revoked_at")
    readonly_fields = fields
    list_select_related = ("user",)
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


# --- tool approvals ----------------------------------------------------------------


@admin.register(ToolApproval)
class ToolApprovalAdmin(ReadOnlyAdmin):
    """Pending and past approvals; an operator may approve or deny pending ones (by "operator")."""

    list_display = ("name", "state", "decision", "by", "session", "user", "requested_at",
                    "expires_at", "decided_at")
    list_filter = ("state", "decision", "name", ("session__user", admin.RelatedOnlyFieldListFilter),
                   "requested_at")
    search_fields = ("id", "name", "session__id", "session__name", "tool_call_id", "by")
    date_hierarchy = "requested_at"
    fields = ("id", "session", "turn_id", "tool_call_id", "name", "args_text", "state", "decision",
              "by", "decided_args_text", "requested_at", "expires_at", "decided_at", "applied_at")
    readonly_fields = fields
    list_select_related = ("session", "session__user")
    actions = ["approve", "deny"]

    @admin.display(description="user", ordering="session__user")
    def user(self, approval):
        return approval.session.user

    @admin.display(description="arguments")
    def args_text(self, approval):
        return json.dumps(approval.args, ensure_ascii=False, sort_keys=True, indent=2)

    @admin.display(description="arguments the person gave")
    def decided_args_text(self, approval):
        if approval.decided_args is None:
            return "—"
        return json.dumps(approval.decided_args, ensure_ascii=False, sort_keys=True, indent=2)

    def has_decide_permission(self, request):
        return request.user.has_perm("sessions_app.change_toolapproval")

    def _decide(self, request, queryset, decision: str) -> None:
        decided = skipped = 0
        for approval_id in queryset.values_list("pk", flat=True):
            try:
                approval = services.approval_decide(approval_id=approval_id, decision=decision,
                                                    by="operator")
            except ApprovalInvalid:
                skipped += 1
                continue
            async_to_sync(events.publish_approval_decided)(approval)
            decided += 1
        self.message_user(request, f"{decided} approval(s) answered {decision!r}.", messages.SUCCESS)
        if skipped:
            self.message_user(request, f"{skipped} were no longer pending (decided or expired).",
                              messages.WARNING)

    @admin.action(description="Approve selected pending tool calls", permissions=["decide"])
    def approve(self, request, queryset):
        self._decide(request, queryset, "approve")

    @admin.action(description="Deny selected pending tool calls", permissions=["decide"])
    def deny(self, request, queryset):
        self._decide(request, queryset, "deny")


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


# --- users: their devices, sessions, spend and quota; pairing a device for them ---------

User = get_user_model()
_MONEY = DecimalField(max_digits=14, decimal_places=8)
NEWEST_SESSIONS = 5


def _user_url(name: str, *args) -> str:
    """The URL of one of the user admin's pages: change, pair_device, revoke_device."""
    return reverse(f"admin:{User._meta.app_label}_{User._meta.model_name}_{name}", args=args)


def _spend_since(since) -> Coalesce:
    """A user's summed usage cost since `since`, as an annotation (a subquery: no join to multiply)."""
    per_user = (UsageRecord.objects.filter(user=OuterRef("pk"), created_at__gte=since).order_by()
                .values("user").annotate(total=Sum("cost_usd")).values("total"))
    return Coalesce(Subquery(per_user, output_field=_MONEY), Value(Decimal(0)), output_field=_MONEY)


def _count_of(queryset) -> Coalesce:
    counted = queryset.filter(user=OuterRef("pk")).order_by().values("user").annotate(n=Count("pk")).values("n")
    return Coalesce(Subquery(counted, output_field=IntegerField()), Value(0))


def _usd(value, places: int = 4) -> str:
    return f"${float(value):,.{places}f}"


def _used_of(used, limit) -> str:
    """Spend against a limit in USD: "$0.1200 of $1.00 (12%)", or the spend alone with no limit."""
    if limit is None:
        return f"{_usd(used)} (no limit)"
    share = 1.0 if limit <= 0 else float(used) / limit
    return f"{_usd(used)} of {_usd(limit, 2)} ({share:.0%})" + (" · spent" if share >= 1 else "")


def _usage_of(user_id: int, now) -> dict:
    """What a user used today and this month, in the gateway's days (CONSTRUCT_TIME_ZONE)."""
    day = budget.day_start(now)
    totals = UsageRecord.objects.filter(user_id=user_id, created_at__gte=budget.month_start(now)).aggregate(
        month_usd=Coalesce(Sum("cost_usd"), Value(Decimal(0)), output_field=_MONEY),
        today_usd=Coalesce(Sum("cost_usd", filter=Q(created_at__gte=day)), Value(Decimal(0)),
                           output_field=_MONEY),
        today_in=Coalesce(Sum("input_tokens", filter=Q(created_at__gte=day)), Value(0),
                          output_field=IntegerField()),
        today_out=Coalesce(Sum("output_tokens", filter=Q(created_at__gte=day)), Value(0),
                           output_field=IntegerField()),
    )
    return {"daily_usd": totals["today_usd"], "monthly_usd": totals["month_usd"],
            "daily_tokens": totals["today_in"] + totals["today_out"]}


class QuotaForm(forms.ModelForm):
    """A user's quota; each help text says what an empty field means right now."""

    DEFAULTS = {
        "daily_budget_usd": ("CONSTRUCT_USER_DAILY_BUDGET_USD", "USD per day"),
        "monthly_budget_usd": ("CONSTRUCT_USER_MONTHLY_BUDGET_USD", "USD per calendar month"),
        "daily_tokens": ("CONSTRUCT_USER_DAILY_TOKENS", "input and output tokens per day"),
    }

    class Meta:
        model = UserQuota
        fields = ("daily_budget_usd", "monthly_budget_usd", "daily_tokens")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name, (variable, unit) in self.DEFAULTS.items():
            default = getattr(settings, variable)
            now = "unset: no limit" if default is None else f"now {default}"
            field = self.fields[name]
            field.help_text = f"{unit}. Empty: the gateway's default, {variable} ({now})."
            field.validators.append(MinValueValidator(0))


class QuotaInline(admin.StackedInline):
    """The user's own limits: one row, or none (the defaults)."""

    model = UserQuota
    form = QuotaForm
    extra = 1
    max_num = 1
    verbose_name = "quota"
    verbose_name_plural = "quota (an empty field takes the gateway's default)"


class DeviceInline(admin.TabularInline):
    """The user's devices, read-only (never a token hash), each active one with a Revoke button."""

    model = PairedDevice
    fields = ("name", "token_hint", "client", "paired_at", "last_seen", "revoked_at", "revoke")
    readonly_fields = fields
    ordering = (F("revoked_at").asc(nulls_first=True), "-paired_at")  # active ones first
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False  # devices come from pairing: "Pair a device" above

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="")
    def revoke(self, device):
        if device.revoked_at is not None:
            return "revoked"
        url = _user_url("revoke_device", device.user_id, device.pk)
        # A submit button of the user's form that posts to its own URL: no nested form,
        # and the form's CSRF token goes with it.
        return format_html('<button type="submit" class="button" formaction="{}" formnovalidate '
                           'aria-label="Revoke {}">Revoke</button>', url, device)


try:
    admin.site.unregister(User)
except admin.sites.NotRegistered:
    pass


@admin.register(User)
class GatewayUserAdmin(UserAdmin):
    """Django's user admin, plus what a user has here: devices, sessions, spend and quota."""

    change_form_template = "admin/sessions_app/user/change_form.html"
    list_display = ("username", "email", "is_staff", "is_active", "session_count", "device_count",
                    "spent_today", "spent_this_month")
    readonly_fields = ("sessions_overview", "spend")
    fieldsets = (*UserAdmin.fieldsets, ("Use of the gateway", {"fields": ("sessions_overview", "spend")}))
    actions = ["pair_device"]

    def get_inlines(self, request, obj):
        return [] if obj is None else [QuotaInline, DeviceInline]

    def get_queryset(self, request):
        now = timezone.now()
        return super().get_queryset(request).annotate(
            sessions_n=_count_of(ChatSession.objects),
            devices_n=_count_of(PairedDevice.objects.filter(revoked_at__isnull=True)),
            spent_day=_spend_since(budget.day_start(now)),
            spent_month=_spend_since(budget.month_start(now)),
        )

    def get_urls(self):
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path("<path:object_id>/pair-device/", self.admin_site.admin_view(self.pair_device_view),
                 name=f"{prefix}_pair_device"),
            path("<int:user_id>/devices/<int:device_id>/revoke/",
                 self.admin_site.admin_view(self.revoke_device_view), name=f"{prefix}_revoke_device"),
            *super().get_urls(),
        ]

    # --- columns and fields ------------------------------------------------------------

    @staticmethod
    def _sessions_url(user) -> str:
        return f"{reverse('admin:sessions_app_chatsession_changelist')}?user__id__exact={user.pk}"

    @admin.display(description="sessions", ordering="sessions_n")
    def session_count(self, user):
        return format_html('<a href="{}">{}</a>', self._sessions_url(user), user.sessions_n)

    @admin.display(description="active devices", ordering="devices_n")
    def device_count(self, user):
        return user.devices_n

    @staticmethod
    def _quota(user) -> tuple:
        # Both spend columns of a row need it: ask once per row.
        if not hasattr(user, "_quota"):
            user._quota = budget.user_quota(user.pk)
        return user._quota

    @admin.display(description="spent today", ordering="spent_day")
    def spent_today(self, user):
        return _used_of(user.spent_day, self._quota(user)[0])

    @admin.display(description="spent this month", ordering="spent_month")
    def spent_this_month(self, user):
        return _used_of(user.spent_month, self._quota(user)[1])

    @admin.display(description="sessions")
    def sessions_overview(self, user):
        newest = list(ChatSession.objects.filter(user=user).order_by("-last_activity")[:NEWEST_SESSIONS])
        count = ChatSession.objects.filter(user=user).count()
        links = format_html_join(
            "", '<li><a href="{}">{}</a> · {} messages</li>',
            ((reverse("admin:sessions_app_chatsession_change", args=[s.pk]), s, s.message_count)
             for s in newest),
        )
        return format_html('<a href="{}">{} session(s)</a>{}', self._sessions_url(user), count,
                           format_html("<ul>{}</ul>", links) if newest else "")

    @admin.display(description="spend and quota")
    def spend(self, user):
        now = timezone.now()
        used = _usage_of(user.pk, now)
        applied = {limit.key: limit for limit in budget.limits(user_id=user.pk, now=now)}
        rows = []
        for key, label in (("daily_usd", "today, USD"), ("monthly_usd", "this month, USD"),
                           ("daily_tokens", "today, tokens")):
            limit = applied.get(key)
            amount = f"{used[key]:,} tokens" if key == "daily_tokens" else _usd(used[key])
            if limit is None:
                rows.append((label, amount, "no limit", "", ""))
            else:
                rows.append((label, amount, limit.amount(limit.limit, exact=False), f"{limit.share:.0%}",
                             timezone.localtime(limit.resets_at).strftime("%Y-%m-%d %H:%M %Z")))
        gateway = applied.get("gateway_daily_usd")
        if gateway is not None:
            rows.append(("the gateway today (everyone)", _usd(gateway.used), _usd(gateway.limit, 2),
                         f"{gateway.share:.0%}",
                         timezone.localtime(gateway.resets_at).strftime("%Y-%m-%d %H:%M %Z")))
        body = format_html_join("", "<tr><th>{}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", rows)
        return format_html(
            '<table class="user-spend"><thead><tr><th></th><th>used</th><th>limit</th><th>share</th>'
            "<th>resets</th></tr></thead><tbody>{}</tbody></table>"
            '<p class="help">Days and months of {}; the limits are the quota below, or the gateway\'s '
            "defaults where it is empty.</p>",
            body, settings.TIME_ZONE,
        )

    # --- revoking a device from the user's page --------------------------------------

    def revoke_device_view(self, request, user_id, device_id):
        if request.method != "POST":
            return HttpResponseRedirect(_user_url("change", user_id))
        if not request.user.has_perm("sessions_app.change_paireddevice"):
            raise PermissionDenied
        device = get_object_or_404(PairedDevice, pk=device_id, user_id=user_id)
        if device_revoke(device_id=device.pk, client=client_from_request(request)):
            self.message_user(request, f"Device “{device}” revoked: its token no longer works.",
                              messages.SUCCESS)
        else:
            self.message_user(request, f"Device “{device}” was already revoked.", messages.WARNING)
        return HttpResponseRedirect(_user_url("change", device.user_id))

    # --- pairing a device for a user -----------------------------------------------

    def pair_device_view(self, request, object_id):
        user = self.get_object(request, object_id)
        if user is None:
            raise Http404("No such user")
        if request.method != "POST":
            return HttpResponseRedirect(_user_url("change", user.pk))
        return self._codes_page(request, [user]) or HttpResponseRedirect(_user_url("change", user.pk))

    @admin.action(description="Pair a device for the selected users (a one-time code each)",
                  permissions=["change"])
    def pair_device(self, request, queryset):
        return self._codes_page(request, list(queryset.order_by(User.USERNAME_FIELD)))

    def _codes_page(self, request, users):
        """Issue a code for each user who may have one, and show them on this page, once."""
        codes, refused = [], []
        for user in users:
            if not self.has_change_permission(request, user):
                raise PermissionDenied
            if not user.is_active:
                refused.append((user, "is inactive"))
            elif user.is_superuser and not request.user.is_superuser:
                # The device would act as that superuser: only a superuser may hand that out.
                refused.append((user, "is a superuser, and only a superuser may pair a device for one"))
            else:
                codes.append((user, pairing_code_issue(user_id=user.pk)))
                # The admin's history of the user says a code was issued (never the code).
                self.log_change(request, user, "Issued a one-time pairing code.")
        for user, reason in refused:
            self.message_user(request, f"No code for {user}: the user {reason}.", messages.WARNING)
        if not codes:
            return None  # back to the list, with the warnings
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Pair a device",
            "codes": codes,
            "minutes": CODE_TTL_SECONDS // 60,
            "chat_url": request.build_absolute_uri("/"),
            "pair_url": request.build_absolute_uri("/pair"),
        }
        response = TemplateResponse(request, "admin/sessions_app/user/pairing_codes.html", context)
        # The codes are credentials until used: no cache may keep this page.
        add_never_cache_headers(response)  # no-store among them
        return response
