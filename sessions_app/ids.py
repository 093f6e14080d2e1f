"""The session id format, as the chat socket's `?session_id=` and the REST API's URLs accept it.

Plain Python, no Django: the socket's protocol checks ids with it before any
model is loaded.
"""

import re

# Letters, digits and . _ : - ; at most 128 characters (ChatSession.id's column).
SESSION_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$")
