"""The REST API of attachments: upload, list, download and delete a session's files.

    POST   /api/sessions/{id}/attachments/            multipart `file` -> 201 {"id", "name", "mime", "size"}
    GET    /api/sessions/{id}/attachments/            {"session_id", "attachments": [...]}
    GET    /api/sessions/{id}/attachments/{att_id}/   the file, always as a download
    DELETE /api/sessions/{id}/attachments/{att_id}/   204

An upload streams to a temporary file as it arrives (never whole in memory)
and is counted on the way: past CONSTRUCT_MAX_ATTACHMENT_BYTES it is a 413.
Another user's session answers as a missing one (404), before any upload is
kept. A download is never something the gateway's origin renders: always
`Content-Disposition: attachment`, `application/octet-stream`, `nosniff`.
"""

import logging
from pathlib import Path

from django.conf import settings
from django.core.files.uploadhandler import TemporaryFileUploadHandler
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response

from sessions_app import attachments, selectors, services
from sessions_app.api.views import (
    NOT_FOUND, SESSION_ID_PARAMETER, UNAUTHORIZED, ApiView, _checked, _error, _session_or_404,
)
from sessions_app.api.serializers import ScopeInputSerializer

logger = logging.getLogger(__name__)

UPLOAD_FIELD = "file"
ATTACHMENT_ID_PARAMETER = OpenApiParameter(
    "attachment_id", OpenApiTypes.STR, OpenApiParameter.PATH, description="The attachment's id"
)
ATTACHMENT_NOT_FOUND = {404: _error("No such session, or no such attachment in it")}


class AttachmentTooLarge(exceptions.APIException):
    """An upload over CONSTRUCT_MAX_ATTACHMENT_BYTES."""

    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "attachment_too_large"


def _too_large() -> AttachmentTooLarge:
    limit = settings.CONSTRUCT_MAX_ATTACHMENT_BYTES
    return AttachmentTooLarge(f"The file is too large: at most {limit} bytes (CONSTRUCT_MAX_ATTACHMENT_BYTES)")


class CappedUploadHandler(TemporaryFileUploadHandler):
    """Django's upload handler that writes every upload to a temporary file, counting the bytes
    of all of a request's files as they arrive: one byte too many and the upload ends in a 413."""

    def __init__(self, request=None, limit: int = 0):
        super().__init__(request)
        self.limit = limit
        self.received = 0

    def receive_data_chunk(self, raw_data, start):
        self.received += len(raw_data)
        if self.received > self.limit:
            self.file.close()  # a temporary file: closing removes it
            raise _too_large()
        return super().receive_data_chunk(raw_data, start)


# --- serializers -------------------------------------------------------------


class AttachmentOutputSerializer(serializers.Serializer):
    id = serializers.CharField()
    name = serializers.CharField(help_text="The file's name as uploaded, sanitised; never a path")
    mime = serializers.CharField(help_text="Found from the file's content, not its name")
    size = serializers.IntegerField(help_text="Bytes")


class AttachmentListOutputSerializer(serializers.Serializer):
    session_id = serializers.CharField()
    attachments = AttachmentOutputSerializer(many=True)


UPLOAD_REQUEST = {
    "multipart/form-data": {
        "type": "object",
        "properties": {UPLOAD_FIELD: {"type": "string", "format": "binary"}},
        "required": [UPLOAD_FIELD],
    }
}


# --- views -------------------------------------------------------------------


class AttachmentListView(ApiView):
    """A session's attachments: upload one, list them."""

    parser_classes = [MultiPartParser]

    @extend_schema(
        operation_id="attachments_list",
        parameters=[SESSION_ID_PARAMETER, ScopeInputSerializer],
        responses={200: AttachmentListOutputSerializer, 400: _error("Bad scope"), **UNAUTHORIZED,
                   **NOT_FOUND},
    )
    def get(self, request, session_id):
        _checked(ScopeInputSerializer, request.query_params)
        session = _session_or_404(request, session_id)
        return Response({
            "session_id": session.pk,
            "attachments": [attachments.attachment_document(a)
                            for a in attachments.attachment_list(session_id=session.pk)],
        })

    @extend_schema(
        operation_id="attachments_upload",
        description="Upload a file into the session (made now, the caller's, if it does not exist "
                    "yet); a message then names it by id in `attachments`.",
        parameters=[SESSION_ID_PARAMETER],
        request=UPLOAD_REQUEST,
        responses={201: AttachmentOutputSerializer,
                   400: _error("No file, an empty file, or a malformed multipart body"),
                   **UNAUTHORIZED, **NOT_FOUND,
                   413: _error("The file is larger than CONSTRUCT_MAX_ATTACHMENT_BYTES"),
                   415: _error("The body is not multipart/form-data")},
    )
    def post(self, request, session_id):
        user_id = request.user.user_id
        owner = selectors.session_owner_id(session_id=session_id)
        if owner is not None and owner != user_id:
            raise exceptions.NotFound("Session not found")  # before any byte of it is kept
        request._request.upload_handlers = [
            CappedUploadHandler(request._request, limit=settings.CONSTRUCT_MAX_ATTACHMENT_BYTES)
        ]
        uploaded = request.FILES.get(UPLOAD_FIELD)
        if uploaded is None:
            return Response({"error": f"No file: send it as the multipart form field '{UPLOAD_FIELD}'"},
                            status=status.HTTP_400_BAD_REQUEST)
        try:
            if uploaded.size == 0:
                return Response({"error": "The file is empty"}, status=status.HTTP_400_BAD_REQUEST)
            try:
                attachment = attachments.attachment_store(
                    session_id=session_id, user_id=user_id,
                    source=Path(uploaded.temporary_file_path()), name=uploaded.name,
                )
            except services.SessionOfAnotherUser:  # taken by another user a moment ago
                raise exceptions.NotFound("Session not found") from None
            except ValueError:  # an id that holds a secret
                return Response({"error": "This session id cannot be used"},
                                status=status.HTTP_400_BAD_REQUEST)
        finally:
            uploaded.close()  # removes the temporary file, if it was not moved away
        logger.info("session %s: attachment %s stored (%d bytes, %s)", session_id, attachment.id,
                    attachment.size, attachment.mime)
        return Response(attachments.attachment_document(attachment), status=status.HTTP_201_CREATED)


class AttachmentDetailView(ApiView):
    """One attachment: download it, delete it."""

    @extend_schema(
        operation_id="attachments_download",
        description="The file, always as a download (`Content-Disposition: attachment`, "
                    "`application/octet-stream`, `X-Content-Type-Options: nosniff`): the gateway "
                    "never renders an uploaded file. Its type is the `mime` the list gives.",
        parameters=[SESSION_ID_PARAMETER, ATTACHMENT_ID_PARAMETER, ScopeInputSerializer],
        responses={(200, "application/octet-stream"): OpenApiResponse(OpenApiTypes.BINARY,
                                                                     description="The file"),
                   400: _error("Bad scope"), **UNAUTHORIZED, **ATTACHMENT_NOT_FOUND},
    )
    def get(self, request, session_id, attachment_id):
        _checked(ScopeInputSerializer, request.query_params)
        attachment = self._attachment_or_404(request, session_id, attachment_id)
        response = attachments.attachment_download(attachment)
        if response is None:
            raise exceptions.NotFound("The attachment's file is gone")
        return response

    @extend_schema(
        operation_id="attachments_destroy",
        parameters=[SESSION_ID_PARAMETER, ATTACHMENT_ID_PARAMETER],
        responses={204: None, **UNAUTHORIZED, **ATTACHMENT_NOT_FOUND},
    )
    def delete(self, request, session_id, attachment_id):
        attachment = self._attachment_or_404(request, session_id, attachment_id)
        attachments.attachment_delete(attachment=attachment)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @staticmethod
    def _attachment_or_404(request, session_id, attachment_id):
        session = _session_or_404(request, session_id)
        attachment = attachments.attachment_get(session_id=session.pk, attachment_id=attachment_id)
        if attachment is None:
            raise exceptions.NotFound("Attachment not found")
        return attachment

