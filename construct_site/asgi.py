"""ASGI entry point for daphne and runserver.

Importing it is the server's start: it fails fast on an unreachable REDIS_URL,
marks turns left running by a dead process as interrupted, and prints a pairing
code when no device is paired yet.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "construct_site.settings")

from construct_site.routing import application  # noqa: E402,F401
from construct_site import startup  # noqa: E402
from django.conf import settings  # noqa: E402

if settings.REDIS_URL:
    startup.check_redis(settings.REDIS_URL)
startup.announce_shell()
startup.announce_pairing()
