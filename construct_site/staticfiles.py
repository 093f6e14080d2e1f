"""Static files: fingerprinted and compressed once collectstatic has run, plain names before.

`python3 run.py serve` and deploy/supervise.py run `collectstatic` before the
server starts, so the page links content-hashed names that WhiteNoise serves
compressed and cached for good. A checkout where it never ran (tests, a bare
`daphne` or `runserver`) still works: without a manifest, names stay plain and
WhiteNoise serves them from the app folders.
"""

from whitenoise.storage import CompressedManifestStaticFilesStorage


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
        return super().read_manifest()

    def stored_name(self, name):
        if not self.hashed_files:
            return name
        return super().stored_name(name)
