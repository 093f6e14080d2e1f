"""The REST API: one view per operation, each with its own serializers; no business logic here.

Reads go through sessions_app.selectors, writes through sessions_app.services.
Every answer that is not a success is a JSON object with an "error" key (see
sessions_app.api.auth.exception_handler), and the schema says so.
"""

import logging

from asgiref.sync import async_to_sync
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpResponse, JsonResponse
from django.utils.http import content_disposition_header
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import exceptions, status
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import JSONParser
from rest_framework.permissions import BasePermission
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from construct_core.errors import ApprovalInvalid, MessageNotFound, SessionBusy
from sessions_app import audit, budget, catalogue, events, exports, selectors, services
from sessions_app.api import serializers as s
from sessions_app.clients import client_from_request
from sessions_app.ids import SESSION_ID_RE
from sessions_app.pairing import device_revoke, pairing_required

logger = logging.getLogger(__name__)

MAX_PAGE_SIZE = 200


# --- shared pieces -----------------------------------------------------------


class RequestTooLarge(exceptions.APIException):
    """The request body is over DATA_UPLOAD_MAX_MEMORY_SIZE."""

    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large"
    default_code = "request_too_large"


class ApiView(APIView):
    """The API's base view: JSON in and out; an oversized body is a JSON 413.

    JSON out even for a browser: the browsable API would answer a browser's
    401 with an HTML page, and the docs live at /api/docs/.
    """

    parser_classes = [JSONParser]
    renderer_classes = [JSONRenderer]

    def handle_exception(self, exc):
        # Django refuses a body over DATA_UPLOAD_MAX_MEMORY_SIZE as it reads
        # it; uncaught, that would be its HTML 400 page.
        if isinstance(exc, RequestDataTooBig):
            limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
            exc = RequestTooLarge(f"Request body too large: at most {limit} bytes")
        return super().handle_exception(exc)

    def paginated(self, request, queryset, serializer_class):
        """One page of `queryset` as `serializer_class` has it, in the view's pagination."""
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(queryset, request, view=self)
        return paginator.get_paginated_response(serializer_class(page, many=True).data)


class SessionPagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = MAX_PAGE_SIZE


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(s.ErrorSerializer, description=description)


UNAUTHORIZED = {401: _error("Missing, invalid or revoked bearer token; the error says how to pair")}
NOT_FOUND = {404: _error("No session with this id")}
BODY_ERRORS = {
    400: _error("The body is not valid JSON or fails validation"),
    413: _error("The body is larger than 1 MiB"),
    415: _error("The body is not application/json"),
}
SESSION_ID_PARAMETER = OpenApiParameter(
    "session_id", OpenApiTypes.STR, OpenApiParameter.PATH,
    description="The session id the chat socket uses", pattern=SESSION_ID_RE.pattern,
)


def _scope(request) -> int | None:
    """Whose sessions a request may see: its user's, or every user's (None) for a staff
    user's read with ?user=all. Another user's session answers as a missing one (404)."""
    wants_all = request.method in ("GET", "HEAD") and request.query_params.get("user") == "all"
    return None if wants_all and request.user.is_staff else request.user.user_id


def _session_or_404(request, session_id: str):
    session = selectors.session_get(session_id=session_id, user_id=_scope(request))
    if session is None:
        raise exceptions.NotFound("Session not found")
    return session


def _session_with_cost_or_404(request, session_id: str):
    session = selectors.session_list(user_id=_scope(request)).filter(pk=session_id).first()
    if session is None:
        raise exceptions.NotFound("Session not found")
    return session


def _checked(serializer_class, data):
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


# --- sessions ----------------------------------------------------------------


class SessionListView(ApiView):
    """Sessions, newest activity first; filter by state, search names and message text."""

    pagination_class = SessionPagination

    @extend_schema(
        operation_id="sessions_list",
        parameters=[s.SessionListInputSerializer],
        responses={200: s.SessionOutputSerializer(many=True), 400: _error("Bad filter"),
                   **UNAUTHORIZED, 404: _error("No such page")},
    )
    def get(self, request):
        filters = _checked(s.SessionListInputSerializer, request.query_params)
        sessions = selectors.session_list(user_id=_scope(request), state=filters.get("state"),
                                          search=filters.get("search"), with_empty=False)
        return self.paginated(request, sessions, s.SessionOutputSerializer)


class SessionDetailView(ApiView):
    """One session: read it, rename it, delete it with its messages."""

    @extend_schema(
        operation_id="sessions_retrieve",
        description="One session, with its summed cost.",
        parameters=[SESSION_ID_PARAMETER, s.ScopeInputSerializer],
        responses={200: s.SessionOutputSerializer, 400: _error("Bad scope"), **UNAUTHORIZED,
                   **NOT_FOUND},
    )
    def get(self, request, session_id):
        _checked(s.ScopeInputSerializer, request.query_params)
        return Response(s.SessionOutputSerializer(_session_with_cost_or_404(request, session_id)).data)

    @extend_schema(
        operation_id="sessions_rename",
        description="Rename a session (a body without `name` changes nothing).",
        parameters=[SESSION_ID_PARAMETER],
        request=s.SessionRenameInputSerializer,
        responses={200: s.SessionOutputSerializer, **BODY_ERRORS, **UNAUTHORIZED, **NOT_FOUND},
    )
    def patch(self, request, session_id):
        _session_or_404(request, session_id)
        data = _checked(s.SessionRenameInputSerializer, request.data)
        if "name" in data:
            services.session_rename(session_id=session_id, name=data["name"])
        return Response(s.SessionOutputSerializer(_session_with_cost_or_404(request, session_id)).data)

    @extend_schema(
        operation_id="sessions_destroy",
        description="Delete a session with its messages (its usage records stay, for cost totals).",
        parameters=[SESSION_ID_PARAMETER],
        responses={204: None, **UNAUTHORIZED, **NOT_FOUND,
                   409: _error("A turn is running in this session; stop it first")},
    )
    def delete(self, request, session_id):
        _session_or_404(request, session_id)
        try:
            deleted = services.session_delete(session_id=session_id)
        except SessionBusy:
            return Response(
                {"error": "The session is running a turn: stop it, then delete the session"},
                status=status.HTTP_409_CONFLICT,
            )
        if not deleted:
            raise exceptions.NotFound("Session not found")
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema_view(patch=extend_schema(exclude=True), delete=extend_schema(exclude=True))
class SessionRunningView(SessionDetailView):
    """The caller's sessions with a running turn (a staff user's ?user=all: everyone's).

    "running" is a valid session id too: such a session is still renamed and
    deleted at this path (the URL conf passes session_id="running"); only its
    GET is taken by this list.
    """

    pagination_class = SessionPagination

    def _allowed_methods(self):
        # The resource here is the list; PATCH and DELETE only keep a session
        # named "running" reachable, and are not advertised (nor in the schema).
        return ["GET", "HEAD", "OPTIONS"]

    @extend_schema(
        operation_id="sessions_running",
        description=(
            "Sessions whose turn is running now, on whichever process runs it, the "
            "longest-running first."
        ),
        parameters=[s.ScopeInputSerializer],
        responses={200: s.RunningSessionOutputSerializer(many=True), 400: _error("Bad scope"),
                   **UNAUTHORIZED, 404: _error("No such page")},
    )
    def get(self, request, session_id=None):
        _checked(s.ScopeInputSerializer, request.query_params)
        sessions = selectors.sessions_running(user_id=_scope(request))
        return self.paginated(request, sessions, s.RunningSessionOutputSerializer)


class SessionStateView(ApiView):
    """A session's state and, while a turn runs, that turn's id and start."""

    @extend_schema(
        operation_id="sessions_state",
        parameters=[SESSION_ID_PARAMETER, s.ScopeInputSerializer],
        responses={200: s.SessionStateOutputSerializer, 400: _error("Bad scope"), **UNAUTHORIZED,
                   **NOT_FOUND},
    )
    def get(self, request, session_id):
        _checked(s.ScopeInputSerializer, request.query_params)
        session = _session_or_404(request, session_id)
        document = {"session_id": session.pk, "state": session.state}
        if session.state == session.State.RUNNING and session.turn_id:
            document["turn_id"] = session.turn_id
            document["turn_started_at"] = session.turn_started_at
        return Response(s.SessionStateOutputSerializer(document).data)


class SessionMessagesView(ApiView):
    """A session's messages: the active branch in order, or every message of every branch."""

    @extend_schema(
        operation_id="sessions_messages",
        parameters=[SESSION_ID_PARAMETER, s.MessagesInputSerializer],
        responses={200: s.MessagesOutputSerializer, 400: _error("Bad scope or branch"),
                   **UNAUTHORIZED, **NOT_FOUND},
    )
    def get(self, request, session_id):
        branch = _checked(s.MessagesInputSerializer, request.query_params)["branch"]
        return Response(exports.messages_document(_session_or_404(request, session_id), branch=branch))


class SessionActiveBranchView(ApiView):
    """Switch the active branch, as the socket's `switch_branch` frame does."""

    @extend_schema(
        operation_id="sessions_active_branch",
        description=(
            "Make active the newest leaf under message `message_id` (any message of any branch). "
            "Every socket of the session gets a `history` frame with the new active branch. "
            "While a turn runs in the session: 409 with code SESSION_BUSY."
        ),
        parameters=[SESSION_ID_PARAMETER],
        request=s.ActiveBranchInputSerializer,
        responses={200: s.ActiveBranchOutputSerializer, **BODY_ERRORS, **UNAUTHORIZED,
                   404: _error("No session with this id, or no such message in it"),
                   409: _error("A turn is running in this session (code SESSION_BUSY)")},
    )
    def put(self, request, session_id):
        _session_or_404(request, session_id)
        message_id = _checked(s.ActiveBranchInputSerializer, request.data)["message_id"]
        try:
            leaf = services.branch_switch(session_id=session_id, message_id=message_id)
        except MessageNotFound as exc:
            return Response({"error": str(exc), "code": exc.code}, status=status.HTTP_404_NOT_FOUND)
        except SessionBusy as exc:
            return Response({"error": str(exc), "code": exc.code}, status=status.HTTP_409_CONFLICT)
        async_to_sync(events.publish_branch_switched)(session_id=session_id, leaf_id=leaf.pk)
        return Response({"session_id": session_id, "leaf_id": leaf.pk, "message_count": leaf.depth})


class ExportNegotiation(DefaultContentNegotiation):
    """Content negotiation that leaves `?format=` alone: here it names the file type."""

    class settings:
        URL_FORMAT_OVERRIDE = None


EXPORT_TYPES = {
    "md": ("text/markdown; charset=utf-8", exports.session_markdown),
    "json": ("application/json", exports.session_json),
}


EXPORT_FILE = (
    "An attachment: Markdown for format=md, the messages document (as GET .../messages/) "
    "for format=json"
)


class SessionExportView(ApiView):
    """The whole conversation as a download: Markdown (default) or JSON."""

    content_negotiation_class = ExportNegotiation

    @extend_schema(
        operation_id="sessions_export",
        parameters=[SESSION_ID_PARAMETER, s.ExportInputSerializer],
        responses={
            (200, "text/markdown"): OpenApiResponse(OpenApiTypes.STR, description=EXPORT_FILE),
            (200, "application/json"): OpenApiResponse(
                s.MessagesOutputSerializer, description=EXPORT_FILE
            ),
            400: _error("Unknown format"), **UNAUTHORIZED, **NOT_FOUND,
        },
    )
    def get(self, request, session_id):
        kind = _checked(s.ExportInputSerializer, request.query_params)["format"]
        session = _session_or_404(request, session_id)
        content_type, render = EXPORT_TYPES[kind]
        response = HttpResponse(render(session), content_type=content_type)
        response["Content-Disposition"] = content_disposition_header(
            as_attachment=True, filename=exports.export_filename(session, kind)
        )
        return response


# --- tool approvals -------------------------------------------------------------

APPROVAL_ID_RE = r"[A-Za-z0-9_\-]{1,64}"
APPROVAL_ID_PARAMETER = OpenApiParameter(
    "approval_id", OpenApiTypes.STR, OpenApiParameter.PATH,
    description="The approval's id, as in the socket's approval_request", pattern=f"^{APPROVAL_ID_RE}$",
)


def _decider_name(request) -> str:
    """Who answers through this token: its device's name (the user's name with pairing off)."""
    device = request.user.device
    if device is not None:
        return device.display_name
    return request.user.user.get_username()


class ApprovalListView(ApiView):
    """Tool calls waiting for (or given) a person's answer, in the caller's sessions, newest first."""

    pagination_class = SessionPagination

    @extend_schema(
        operation_id="approvals_list",
        parameters=[s.ApprovalListInputSerializer],
        responses={200: s.ApprovalOutputSerializer(many=True), 400: _error("Bad filter"),
                   **UNAUTHORIZED, 404: _error("No such page")},
    )
    def get(self, request):
        filters = _checked(s.ApprovalListInputSerializer, request.query_params)
        approvals = selectors.approval_list(user_id=_scope(request), state=filters.get("state"),
                                            session_id=filters.get("session_id"))
        return self.paginated(request, approvals, s.ApprovalOutputSerializer)


class ApprovalDecideView(ApiView):
    """Answer a tool call that waits for approval, as the socket's `approval` frame does."""

    @extend_schema(
        operation_id="approvals_decide",
        description=(
            "`approve`, `deny` or `always` (approve, and run this tool without asking for the rest "
            "of the session). `args` replaces the call's arguments. The session's sockets get "
            "`approval_result` with `by` = this token's device name. An approval that is no longer "
            "pending (already decided, or past its expiry) answers 409 with code APPROVAL_INVALID."
        ),
        parameters=[APPROVAL_ID_PARAMETER],
        request=s.ApprovalDecideInputSerializer,
        responses={200: s.ApprovalOutputSerializer, **BODY_ERRORS, **UNAUTHORIZED,
                   404: _error("No approval with this id in the caller's sessions"),
                   409: OpenApiResponse(s.ApprovalErrorSerializer,
                                        description="Already decided, or expired: APPROVAL_INVALID")},
    )
    def post(self, request, approval_id):
        user_id = request.user.user_id
        if selectors.approval_get(approval_id=approval_id, user_id=user_id) is None:
            raise exceptions.NotFound("Approval not found")
        data = _checked(s.ApprovalDecideInputSerializer, request.data)
        try:
            approval = services.approval_decide(
                approval_id=approval_id, decision=data["decision"], by=_decider_name(request),
                args=data.get("args"), user_id=user_id,
            )
        except ApprovalInvalid as exc:
            return Response({"error": str(exc), "code": exc.code, "approval_id": approval_id},
                            status=status.HTTP_409_CONFLICT)
        async_to_sync(events.publish_approval_decided)(approval)
        return Response(s.ApprovalOutputSerializer(approval).data)


# --- models ---------------------------------------------------------------------


class ModelListView(ApiView):
    """The models people may choose for a session, the default and the default reasoning level."""

    @extend_schema(
        operation_id="models_list",
        description=(
            "The models a `message` may name in `\"model\"` (CONSTRUCT_MODELS), the default first. "
            "`thinking`: the model may reason; a `message`'s `\"reasoning\"` reaches only such a "
            "model. Never a URL or a key."
        ),
        responses={200: s.ModelsOutputSerializer, **UNAUTHORIZED},
    )
    def get(self, request):
        return Response(catalogue.models_document())


# --- cost and channel events -------------------------------------------------


class CostView(ApiView):
    """The caller's tokens, requests and cost (a staff user's ?user=all: everyone's), with the
    limits that apply to them."""

    @extend_schema(operation_id="cost_retrieve", parameters=[s.ScopeInputSerializer],
                   responses={200: s.CostWithLimitsSerializer, 400: _error("Bad scope"),
                              **UNAUTHORIZED})
    def get(self, request):
        _checked(s.ScopeInputSerializer, request.query_params)
        return Response(budget.cost_summary(user_id=_scope(request)))


OPERATOR_EVENTS_SHOWN = 100


class ChannelEventView(ApiView):
    """POST an operator event: from a staff user's token every connected chat socket receives it
    as `agent_event`; from anyone else's, that user's own sockets. GET the last ones the caller's
    sockets would have received, so a page opened later shows them."""

    @extend_schema(
        operation_id="channel_events_list", parameters=[s.ScopeInputSerializer],
        responses={200: s.OperatorEventListSerializer, 400: _error("Bad scope"), **UNAUTHORIZED},
    )
    def get(self, request):
        """The last 100 operator events the caller may see, oldest first: the ones for everyone
        and the caller's own (their turns' start, end and error, what they posted); a staff
        user's ?user=all: every user's."""
        _checked(s.ScopeInputSerializer, request.query_params)
        rows = selectors.operator_events(user_id=_scope(request), limit=OPERATOR_EVENTS_SHOWN)
        return Response({"events": s.OperatorEventSerializer(rows, many=True).data})

    @extend_schema(
        operation_id="channel_events_create",
        request={"application/json": {"type": "object", "additionalProperties": True,
                                      "minProperties": 1}},
        responses={202: s.ChannelEventAcceptedSerializer, **BODY_ERRORS, **UNAUTHORIZED},
    )
    def post(self, request):
        if not isinstance(request.data, dict) or not request.data:
            return Response({"error": "The body must be a non-empty JSON object"},
                            status=status.HTTP_400_BAD_REQUEST)
        user_id = None if request.user.is_staff else request.user.user_id
        async_to_sync(events.publish_channel_event)(dict(request.data), user_id=user_id)
        return Response({"delivered": True}, status=status.HTTP_202_ACCEPTED)


# --- the audit trail ---------------------------------------------------------


class IsStaff(BasePermission):
    """A staff user's token only."""

    message = "Staff only: the audit trail is for a staff user's token"

    def has_permission(self, request, view):
        return bool(request.user and request.user.is_authenticated and request.user.is_staff)


STAFF_ONLY = {**UNAUTHORIZED, 403: _error("The token is not a staff user's")}


class AuditListView(ApiView):
    """The audit trail of security events, newest first; staff only."""

    pagination_class = SessionPagination
    permission_classes = [IsStaff]

    @extend_schema(
        operation_id="audit_list",
        parameters=[s.AuditListInputSerializer],
        responses={200: s.AuditEventOutputSerializer(many=True), 400: _error("Bad filter"),
                   **STAFF_ONLY, 404: _error("No such page")},
    )
    def get(self, request):
        filters = _checked(s.AuditListInputSerializer, request.query_params)
        return self.paginated(request, selectors.audit_list(kind=filters.get("kind")),
                              s.AuditEventOutputSerializer)


class AuditVerifyView(ApiView):
    """Check the audit trail's hash chain, as `manage.py audit_verify` does; staff only."""

    permission_classes = [IsStaff]

    @extend_schema(
        operation_id="audit_verify",
        description=(
            "`ok`: every entry matches its hash and links to the one before, and the head "
            "matches the newest. Otherwise `first_bad` names the first problem found."
        ),
        responses={200: s.AuditVerifyOutputSerializer, **STAFF_ONLY},
    )
    def get(self, request):
        return Response(s.AuditVerifyOutputSerializer(audit.audit_check()).data)


# --- who is signed in ---------------------------------------------------------


class MeView(ApiView):
    """Who this token belongs to: the user and the device."""

    @extend_schema(operation_id="me_retrieve", responses={200: s.MeOutputSerializer, **UNAUTHORIZED})
    def get(self, request):
        device = request.user.device
        return Response({
            "username": request.user.user.get_username(),
            "is_staff": request.user.is_staff,
            "device": None if device is None else {"id": device.pk, "name": device.name},
            "require_pairing": pairing_required(),
        })


class SignOutView(ApiView):
    """Sign out: this token's device is revoked (its open sockets close)."""

    @extend_schema(operation_id="sign_out", request=None,
                   responses={200: s.SignedOutSerializer, **BODY_ERRORS, **UNAUTHORIZED})
    def post(self, request):
        device = request.user.device
        if device is not None:
            device_revoke(device_id=device.pk, client=client_from_request(request._request))
        return Response({"signed_out": device is not None})


# --- anything else under /api/ -----------------------------------------------


@csrf_exempt  # no view here: an unsafe method must get this JSON 404, not an HTML CSRF page
def api_not_found(request, rest=""):
    """A JSON 404 for any other path under /api/ (Django's own would be an HTML page)."""
    return JsonResponse(
        {"error": "Not found: no such API endpoint (API paths end with a slash)"}, status=404
    )
