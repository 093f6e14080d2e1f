"""Bearer authentication for the REST API (placeholder, filled in with pairing)."""
from rest_framework.authentication import BaseAuthentication
from rest_framework.views import exception_handler as drf_exception_handler


class BearerTokenAuthentication(BaseAuthentication):
    def authenticate(self, request):
        return None


def exception_handler(exc, context):
    return drf_exception_handler(exc, context)
