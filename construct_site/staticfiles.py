"""Static files: fingerprinted and compressed once collectstatic has run, plain names before.

`python3 run.py serve` and deploy/supervise.py run `collectstatic` before the
server starts, so the page links content-hashed names that WhiteNoise serves
compressed and cached for good. A checkout where it never ran (tests, a bare
`daphne` or `runserver`) still works: without a manifest, names stay plain and
WhiteNoise serves them from the app folders.
"""

import logging
import os

from django.contrib.staticfiles import finders
from whitenoise.storage import CompressedManifestStaticFilesStorage

logger = logging.getLogger(__name__)


def _newest_source_mtime() -> float:
    """When the newest static file of the project and its apps was changed."""
    newest = 0.0
    for finder in finders.get_finders():
        for path, storage in finder.list([]):
            try:
                newest = max(newest, os.stat(storage.path(path)).st_mtime)
            except (OSError, NotImplementedError):
                continue
    return newest


class CollectedStaticFilesStorage(CompressedManifestStaticFilesStorage):
    """WhiteNoise's compressed manifest storage that answers plain names until there is a manifest."""

    # A file added since the last collectstatic gets its plain name, not an error page.
    manifest_strict = False
    # ES modules import each other by relative path: rewrite those imports to the
    # hashed names, so a page never mixes a new module with an old cached one.
    support_js_module_import_aggregation = True

    def read_manifest(self):
        if not self.location:  # no STATIC_ROOT folder yet: nothing was collected
            return None
        content = super().read_manifest()
        if content is None:
            return None
        # A file edited since the last collectstatic: its fingerprinted copy is
        # the old one. Plain names, served fresh from the app folders, until the
        # next collectstatic (which writes a newer manifest).
        if _newest_source_mtime() > os.stat(self.path(self.manifest_name)).st_mtime:
            logger.warning("Static files changed since the last collectstatic: serving them "
                           "unfingerprinted; run `manage.py collectstatic` (run.py serve does)")
            return None
        return content

    def stored_name(self, name):
        if not self.hashed_files:
            return name
        return super().stored_name(name)
