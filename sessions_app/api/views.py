"""The REST API: one view per operation, no business logic here."""

from asgiref.sync import async_to_sync
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from chat import events


class ChannelEventAcceptedSerializer(serializers.Serializer):
    delivered = serializers.BooleanField()


class ChannelEventView(APIView):
    """POST an operator event; every connected chat socket receives it as `agent_event`."""

    @extend_schema(
        request={"application/json": {"type": "object", "additionalProperties": True}},
        responses={202: ChannelEventAcceptedSerializer, 400: OpenApiResponse(description="Not a JSON object")},
    )
    def post(self, request):
        if not isinstance(request.data, dict):
            return Response({"error": "The body must be a JSON object"}, status=status.HTTP_400_BAD_REQUEST)
        async_to_sync(events.publish_channel_event)(dict(request.data))
        return Response({"delivered": True}, status=status.HTTP_202_ACCEPTED)
