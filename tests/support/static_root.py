"""Tests never read or write the checkout's collected static files (staticfiles/).

Loaded with ``-p`` (pytest.ini), before Django reads its settings. A run of
`run.py serve` or deploy/supervise.py in the checkout leaves a manifest there,
and with it the page would link fingerprinted names from that run, not the
files under test. The run gets a folder of its own instead, which does not
exist until something collects into it (deploy/supervise.py in its test), and
which is removed at the end. Workers inherit the controller's.
"""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

if "CONSTRUCT_STATIC_ROOT" not in os.environ:
    _root = Path(tempfile.gettempdir()) / f"construct-tests-static-{os.getpid()}"
    os.environ["CONSTRUCT_STATIC_ROOT"] = str(_root)
    atexit.register(shutil.rmtree, _root, ignore_errors=True)
