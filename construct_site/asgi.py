"""ASGI entry point for daphne and runserver.

Importing it has no side effects beyond loading Django: no Redis ping, no
output, no database write. Under daphne (whose reactor is installed before
it imports this module) the start-up work is scheduled for when the server
starts serving: see construct_site.serving.
"""

import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "construct_site.settings")

from construct_site.routing import application  # noqa: E402,F401

# Never import the reactor here: that would install one where daphne did not.
if "twisted.internet.reactor" in sys.modules:
    from construct_site.serving import on_server_start  # noqa: E402

    on_server_start()
