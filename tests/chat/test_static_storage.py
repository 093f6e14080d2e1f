"""The static files storage: fingerprinted names from a fresh manifest, plain names otherwise."""

import io
import os

import pytest
from django.core.management import call_command

from construct_site.staticfiles import CollectedStaticFilesStorage


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    root = tmp_path_factory.mktemp("collected")
    from django.test import override_settings

    with override_settings(STATIC_ROOT=str(root)):
        call_command("collectstatic", "--noinput", verbosity=0, stdout=io.StringIO())
    return root


def test_a_fresh_manifest_gives_fingerprinted_names(collected):
    storage = CollectedStaticFilesStorage(location=str(collected))
    url = storage.url("chat/main.js")
    assert url.startswith("/static/chat/main.") and url != "/static/chat/main.js"
    assert (collected / url.removeprefix("/static/")).is_file()
    assert (collected / (url.removeprefix("/static/") + ".gz")).is_file()


def test_a_manifest_older_than_a_source_file_is_ignored(collected, tmp_path):
    stale = tmp_path / "stale"
    stale.mkdir()
    manifest = stale / "staticfiles.json"
    manifest.write_bytes((collected / "staticfiles.json").read_bytes())
    os.utime(manifest, (0, 0))  # written before any source file was changed

    assert CollectedStaticFilesStorage(location=str(stale)).url("chat/main.js") == "/static/chat/main.js"


def test_without_a_manifest_or_a_folder_names_stay_plain(tmp_path):
    assert CollectedStaticFilesStorage(location=str(tmp_path)).url("chat/main.js") == "/static/chat/main.js"
    assert CollectedStaticFilesStorage(location=None).url("chat/main.js") == "/static/chat/main.js"
