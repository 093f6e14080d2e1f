"""Input and output serializers of the REST API, one pair per operation.

Output serializers only shape data; input serializers only check it. Neither
saves anything: the views hand checked data to services.
"""

from rest_framework import serializers

from construct_core.approvals import json_storable
from construct_core.model_choices import PROVIDERS, REASONING_LEVELS

from sessions_app.catalogue import model_of_session
from sessions_app.models import AuditEvent, ChatSession, ToolApproval

NAME_MAX_CHARS = ChatSession._meta.get_field("name").max_length
SEARCH_MAX_CHARS = 200


# --- errors ------------------------------------------------------------------


class ErrorSerializer(serializers.Serializer):
    """Every error answer: a human-readable `error`, sometimes with DRF's own keys beside it."""

    error = serializers.CharField()
    detail = serializers.CharField(required=False)


# --- sessions ----------------------------------------------------------------


class ScopeInputSerializer(serializers.Serializer):
    user = serializers.ChoiceField(
        choices=[("all", "every user's")], required=False,
        help_text="`all`: every user's, for a staff user's token (others see their own either way)",
    )


class SessionListInputSerializer(ScopeInputSerializer):
    state = serializers.ChoiceField(choices=ChatSession.State.choices, required=False)
    search = serializers.CharField(required=False, max_length=SEARCH_MAX_CHARS)


class SessionOutputSerializer(serializers.Serializer):
    id = serializers.CharField()
    name = serializers.CharField()
    state = serializers.ChoiceField(choices=ChatSession.State.choices)
    message_count = serializers.IntegerField()
    chat_message_count = serializers.IntegerField(
        help_text="User messages and assistant answers with text, in every branch (not tool rows)")
    created_at = serializers.DateTimeField()
    last_activity = serializers.DateTimeField()
    turn_id = serializers.CharField(allow_null=True)
    cost_usd = serializers.FloatField(help_text="Summed cost of the session's provider calls, USD")
    model = serializers.SerializerMethodField(help_text="The model of its next turn (GET /api/models/)")

    def get_model(self, session) -> str:
        return model_of_session(session.model).id


class SessionRenameInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=NAME_MAX_CHARS, required=False)


class RunningSessionOutputSerializer(SessionOutputSerializer):
    turn_started_at = serializers.DateTimeField(allow_null=True)


class SessionStateOutputSerializer(serializers.Serializer):
    """A session's state; the turn's id and start only while a turn runs."""

    session_id = serializers.CharField()
    state = serializers.ChoiceField(choices=ChatSession.State.choices)
    turn_id = serializers.CharField(required=False, help_text="Only while a turn runs")
    turn_started_at = serializers.DateTimeField(required=False, help_text="Only while a turn runs")


# --- messages ----------------------------------------------------------------


# The schema of the messages document, which sessions_app.exports.messages_document builds.
class MessagesInputSerializer(ScopeInputSerializer):
    branch = serializers.ChoiceField(
        choices=[("active", "the active branch"), ("all", "every message of every branch")],
        default="active",
        help_text="`active` (default): the path from the first message to the active leaf, in "
                  "order; `all`: every message, in the order they were written",
    )


class MessageOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    parent_id = serializers.IntegerField(allow_null=True,
                                         help_text="The message this one follows; null for a first message")
    sibling_ids = serializers.ListField(
        child=serializers.IntegerField(),
        help_text="The messages that follow the same parent (this one included), oldest first: "
                  "the versions of this step",
    )
    seq = serializers.IntegerField()
    role = serializers.CharField()
    content = serializers.CharField()
    created_at = serializers.DateTimeField()
    turn_id = serializers.CharField()
    data = serializers.JSONField(
        help_text="Tool calls, tool call ids, thinking, page_context, client_id, a `stopped` mark, "
                  "`attachments` (each {id, name, mime, size}) on a user message"
    )


class MessagesOutputSerializer(serializers.Serializer):
    session_id = serializers.CharField()
    messages = MessageOutputSerializer(many=True)


class ActiveBranchInputSerializer(serializers.Serializer):
    message_id = serializers.IntegerField(
        min_value=1, max_value=2**63 - 1,
        help_text="Any message of any branch: the newest leaf under it becomes the active leaf",
    )


class ActiveBranchOutputSerializer(serializers.Serializer):
    session_id = serializers.CharField()
    leaf_id = serializers.IntegerField()
    message_count = serializers.IntegerField(help_text="Messages on the active branch")


class ExportInputSerializer(ScopeInputSerializer):
    format = serializers.ChoiceField(
        choices=[("md", "Markdown"), ("json", "JSON")], default="md", help_text="The file type"
    )


# --- models ------------------------------------------------------------------


class ModelOutputSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="The model's name: what a message's `model` names")
    label = serializers.CharField(help_text="The name people see")
    provider = serializers.ChoiceField(choices=[(p, p) for p in PROVIDERS])
    thinking = serializers.BooleanField(help_text="Whether the model may reason (the `reasoning` switch)")


class ModelsOutputSerializer(serializers.Serializer):
    models = ModelOutputSerializer(many=True)
    default = serializers.CharField(help_text="The model of a session that chose none")
    reasoning_default = serializers.ChoiceField(
        choices=[(level, level) for level in REASONING_LEVELS],
        help_text="The reasoning level of a message that names none (CONSTRUCT_REASONING_DEFAULT)",
    )


# --- cost --------------------------------------------------------------------


class UsageTotalsSerializer(serializers.Serializer):
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField()
    request_count = serializers.IntegerField()
    cost_usd = serializers.FloatField()


class CostOutputSerializer(UsageTotalsSerializer):
    today = UsageTotalsSerializer(help_text="Since midnight in the gateway's time zone (CONSTRUCT_TIME_ZONE)")
    by_model = serializers.DictField(child=UsageTotalsSerializer())
    by_session = serializers.DictField(child=UsageTotalsSerializer(), help_text="Keyed by session id")
    daily_budget_usd = serializers.FloatField(allow_null=True, help_text="The gateway's daily budget")
    daily_budget_used = serializers.FloatField(
        allow_null=True, required=False,
        help_text="Share of today's budget spent (1.0 is all of it); null without a budget.",
    )


class LimitSerializer(serializers.Serializer):
    limit = serializers.FloatField()
    used = serializers.FloatField()
    unit = serializers.ChoiceField(choices=[("usd", "USD"), ("tokens", "tokens")])
    share = serializers.FloatField(help_text="The share used: 1.0 is all of it")
    resets_at = serializers.DateTimeField()


class CostLimitsSerializer(serializers.Serializer):
    gateway_daily_usd = LimitSerializer(required=False)
    daily_usd = LimitSerializer(required=False)
    monthly_usd = LimitSerializer(required=False)
    daily_tokens = LimitSerializer(required=False)


class CostWithLimitsSerializer(CostOutputSerializer):
    limits = CostLimitsSerializer(help_text="The limits that apply to the caller's turns; "
                                            "absent ones are not set")


# --- who is signed in --------------------------------------------------------


class MeOutputSerializer(serializers.Serializer):
    username = serializers.CharField()
    is_staff = serializers.BooleanField()
    device = serializers.DictField(allow_null=True, help_text="This token's device: id and name")
    require_pairing = serializers.BooleanField()


class SignedOutSerializer(serializers.Serializer):
    signed_out = serializers.BooleanField()


# --- channel events ----------------------------------------------------------


class ChannelEventAcceptedSerializer(serializers.Serializer):
    delivered = serializers.BooleanField()


class OperatorEventSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    session_id = serializers.CharField(allow_blank=True, help_text="The session of a turn's event, or empty")
    event = serializers.JSONField(help_text="The event as the chat sockets received it in `agent_event`")


class OperatorEventListSerializer(serializers.Serializer):
    events = OperatorEventSerializer(many=True, help_text="Oldest first")


# --- tool approvals ----------------------------------------------------------


class ApprovalListInputSerializer(ScopeInputSerializer):
    state = serializers.ChoiceField(
        choices=ToolApproval.State.choices, required=False,
        help_text="`pending`: those that may still be answered (not past their expiry)",
    )
    session_id = serializers.CharField(required=False, max_length=128,
                                       help_text="Only this session's approvals")


class ApprovalOutputSerializer(serializers.Serializer):
    id = serializers.CharField()
    session_id = serializers.CharField()
    turn_id = serializers.CharField()
    tool_call_id = serializers.CharField()
    name = serializers.CharField(help_text="The tool")
    args = serializers.JSONField(help_text="The arguments the model gave the call")
    state = serializers.ChoiceField(choices=ToolApproval.State.choices)
    decision = serializers.CharField(help_text="approve, deny, always or timeout; empty while pending")
    by = serializers.CharField(help_text="Who decided: a device's name, 'operator' or 'timeout'")
    decided_args = serializers.JSONField(
        allow_null=True, help_text="The arguments the person put in place of the model's, if any"
    )
    requested_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()
    decided_at = serializers.DateTimeField(allow_null=True)


class ApprovalDecideInputSerializer(serializers.Serializer):
    decision = serializers.ChoiceField(choices=[("approve", "approve"), ("deny", "deny"),
                                                ("always", "approve, and allow the tool for the rest "
                                                           "of the session")])
    args = serializers.DictField(
        required=False,
        help_text="The call's new arguments (a JSON object), checked like the model's when it runs",
    )

    def validate_args(self, value):
        if not json_storable(value):
            raise serializers.ValidationError("must not hold NaN, Infinity, NUL or lone surrogates")
        return value


class ApprovalErrorSerializer(serializers.Serializer):
    error = serializers.CharField()
    code = serializers.ChoiceField(choices=[("APPROVAL_INVALID", "APPROVAL_INVALID")])
    approval_id = serializers.CharField()


# --- the audit trail ----------------------------------------------------------


class AuditListInputSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=AuditEvent.Kind.choices, required=False)


class AuditEventOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    kind = serializers.ChoiceField(choices=AuditEvent.Kind.choices)
    client = serializers.CharField(help_text="The client address the event came from")
    detail = serializers.DictField(help_text="What happened; never a token or a code")
    prev_hash = serializers.CharField()
    hash = serializers.CharField()


class AuditBadEntrySerializer(serializers.Serializer):
    id = serializers.IntegerField(allow_null=True,
                                  help_text="The entry; null when the head no longer matches the newest")
    problem = serializers.CharField()


class AuditVerifyOutputSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    checked = serializers.IntegerField(help_text="How many entries were checked")
    first_bad = AuditBadEntrySerializer(required=False, help_text="The first problem, when not ok")
