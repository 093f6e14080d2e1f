"""The Django SECRET_KEY when DJANGO_SECRET_KEY is unset: made once, then kept in a file.

The file, `secret_key` in CONSTRUCT_DATA_DIR, is readable by the gateway's user
only (0600). It is published whole or not at all, so servers that start at the
same moment agree on one key. Called while settings load: it reads no setting.
"""

import logging
import os
import stat
import tempfile
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured
from django.core.management.utils import get_random_secret_key

logger = logging.getLogger(__name__)

FILE_NAME = "secret_key"


def secret_key_load(data_dir: Path) -> str:
    """The key kept in `data_dir`, made first if there is none; ImproperlyConfigured if neither works."""
    path = Path(data_dir) / FILE_NAME
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            _create(path)
        _private(path)
        key = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ImproperlyConfigured(
            f"DJANGO_SECRET_KEY is not set and the key file {path} could not be created or read "
            f"({exc.strerror or exc}): set DJANGO_SECRET_KEY, or set CONSTRUCT_DATA_DIR to a "
            "folder the gateway may write to"
        ) from None
    if not key:
        raise ImproperlyConfigured(
            f"DJANGO_SECRET_KEY is not set and the key file {path} is empty: delete it to have a "
            "new key made there (CONSTRUCT_DATA_DIR), or set DJANGO_SECRET_KEY"
        )
    return key


def _create(path: Path) -> None:
    """Write a new key to `path` unless another process has just done so.

    The key is written to a private temporary file and linked into place: a
    link fails when the name exists and never shows a half-written file, which
    O_EXCL on the final name would (between its create and its write), and a
    crash leaves at most the temporary file behind.
    """
    handle, temporary = tempfile.mkstemp(prefix=f".{FILE_NAME}.", dir=path.parent)  # 0600, O_EXCL
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(get_random_secret_key() + "\n")
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return  # another process made it first: its key is the key
        logger.warning("made a new secret key in %s (set DJANGO_SECRET_KEY to choose one)", path)
    finally:
        os.unlink(temporary)


def _private(path: Path) -> None:
    """Make a key file that others may read private again (0600), saying so."""
    if os.name != "posix":
        return
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        os.chmod(path, 0o600)
        logger.warning(
            "the secret key file %s was readable by others (mode %o); it is now 0600. If anyone "
            "else may have read it, delete it so that a new key is made", path, mode,
        )
