from django.urls import path, re_path, register_converter
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.permissions import AllowAny

from sessions_app.api import attachments, views
from sessions_app.ids import SESSION_ID_RE


class SessionIdConverter:
    """A session id as the chat socket accepts it: letters, digits and . : - _"""

    regex = SESSION_ID_RE.pattern.removeprefix("^").removesuffix("$")

    def to_python(self, value):
        return value

    def to_url(self, value):
        return value


register_converter(SessionIdConverter, "session_id")


class ApprovalIdConverter:
    regex = views.APPROVAL_ID_RE

    def to_python(self, value):
        return value

    def to_url(self, value):
        return value


register_converter(ApprovalIdConverter, "approval_id")

# The schema and its docs need no token: they describe how to get one. No
# authentication at all, so a stale token in a browser cannot get them a 401.
_public = {"authentication_classes": [], "permission_classes": [AllowAny]}

urlpatterns = [
    path("sessions/", views.SessionListView.as_view(), name="api-session-list"),
    # Before the session detail: "running" is a valid session id too.
    path("sessions/running/", views.SessionRunningView.as_view(), {"session_id": "running"},
         name="api-sessions-running"),
    path("sessions/<session_id:session_id>/", views.SessionDetailView.as_view(),
         name="api-session-detail"),
    path("sessions/<session_id:session_id>/state/", views.SessionStateView.as_view(),
         name="api-session-state"),
    path("sessions/<session_id:session_id>/messages/", views.SessionMessagesView.as_view(),
         name="api-session-messages"),
    path("sessions/<session_id:session_id>/active/", views.SessionActiveBranchView.as_view(),
         name="api-session-active"),
    path("sessions/<session_id:session_id>/export/", views.SessionExportView.as_view(),
         name="api-session-export"),
    path("approvals/", views.ApprovalListView.as_view(), name="api-approval-list"),
    path("approvals/<approval_id:approval_id>/", views.ApprovalDecideView.as_view(),
         name="api-approval-decide"),
    path("sessions/<session_id:session_id>/attachments/", attachments.AttachmentListView.as_view(),
         name="api-session-attachments"),
    path("sessions/<session_id:session_id>/attachments/<str:attachment_id>/",
         attachments.AttachmentDetailView.as_view(), name="api-session-attachment"),
    path("audit/", views.AuditListView.as_view(), name="api-audit-list"),
    path("audit/verify/", views.AuditVerifyView.as_view(), name="api-audit-verify"),
    path("models/", views.ModelListView.as_view(), name="api-models"),
    path("cost/", views.CostView.as_view(), name="api-cost"),
    path("channel-events/", views.ChannelEventView.as_view(), name="api-channel-events"),
    path("me/", views.MeView.as_view(), name="api-me"),
    path("sign-out/", views.SignOutView.as_view(), name="api-sign-out"),
    path("schema/", SpectacularAPIView.as_view(**_public), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema", **_public),
         name="api-docs"),
    # [\s\S], not ".": a path with an encoded newline must get the JSON 404 too.
    re_path(r"^(?P<rest>[\s\S]*)$", views.api_not_found),
]
