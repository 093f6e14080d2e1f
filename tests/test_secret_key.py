"""The Django secret key: DJANGO_SECRET_KEY, else one made once and kept in CONSTRUCT_DATA_DIR.

Settings are read once, at import, so each case starts Django in a fresh
subprocess, as an operator would start the server.
"""

import os
import stat
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PROBE = (
    "import django; django.setup(); from django.conf import settings; "
    "print(settings.SECRET_KEY); print(settings.DATABASES['default']['NAME'])"
)
# Each case sets these itself; none is inherited from the environment of the run.
CLEARED = ("DJANGO_SECRET_KEY", "CONSTRUCT_DATA_DIR", "DATABASE_URL", "REDIS_URL")


def environment(**env):
    full = {k: v for k, v in os.environ.items() if k not in CLEARED}
    full.update(env, DJANGO_SETTINGS_MODULE="construct_site.settings", DJANGO_DEBUG="false")
    return full


def start(**env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", PROBE], cwd=REPO_ROOT, env=environment(**env),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def settle(process) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=60)
    return process.returncode, out, err


def key_and_database(**env) -> tuple[str, str, str]:
    code, out, err = settle(start(**env))
    assert code == 0, err
    key, database = out.splitlines()[-2:]
    return key, database, err


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_first_start_makes_a_private_key_file_and_the_next_reads_it(tmp_path):
    key, database, err = key_and_database(CONSTRUCT_DATA_DIR=str(tmp_path))

    key_file = tmp_path / "secret_key"
    assert key_file.read_text().strip() == key
    assert len(key) >= 50
    assert mode(key_file) == 0o600
    assert database == str(tmp_path / "db.sqlite3")  # the default database lives beside it
    assert "made a new secret key" in err and key not in err
    assert [p.name for p in tmp_path.iterdir()] == ["secret_key"]  # no temporary file left

    again, _, err = key_and_database(CONSTRUCT_DATA_DIR=str(tmp_path))
    assert again == key
    assert "made a new secret key" not in err


def test_servers_starting_at_once_agree_on_one_key(tmp_path):
    processes = [start(CONSTRUCT_DATA_DIR=str(tmp_path)) for _ in range(4)]

    results = [settle(process) for process in processes]

    assert all(code == 0 for code, _, _ in results), [err for _, _, err in results]
    keys = {out.splitlines()[-2] for _, out, _ in results}
    assert keys == {(tmp_path / "secret_key").read_text().strip()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret_key"]


def test_django_secret_key_wins_and_no_file_is_made(tmp_path):
    key, _, _ = key_and_database(CONSTRUCT_DATA_DIR=str(tmp_path), DJANGO_SECRET_KEY="chosen-" + "k" * 50)

    assert key == "chosen-" + "k" * 50
    assert not (tmp_path / "secret_key").exists()


def test_a_missing_data_dir_is_made(tmp_path):
    data_dir = tmp_path / "not" / "yet"

    key, _, _ = key_and_database(CONSTRUCT_DATA_DIR=str(data_dir))

    assert (data_dir / "secret_key").read_text().strip() == key


def test_a_key_file_others_may_read_is_made_private_with_a_warning(tmp_path):
    key_file = tmp_path / "secret_key"
    key_file.write_text("an-operators-own-key-" + "x" * 40 + "\n")
    key_file.chmod(0o644)

    key, _, err = key_and_database(CONSTRUCT_DATA_DIR=str(tmp_path))

    assert key == "an-operators-own-key-" + "x" * 40
    assert mode(key_file) == 0o600
    assert "readable by others (mode 644); it is now 0600" in err and str(key_file) in err


def test_a_data_dir_that_cannot_be_written_stops_start_up_naming_both_variables(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")

    code, _, err = settle(start(CONSTRUCT_DATA_DIR=str(blocker / "data")))

    assert code != 0
    assert "ImproperlyConfigured" in err
    assert "DJANGO_SECRET_KEY" in err and "CONSTRUCT_DATA_DIR" in err


def test_an_empty_key_file_stops_start_up(tmp_path):
    (tmp_path / "secret_key").write_text("\n")
    (tmp_path / "secret_key").chmod(0o600)

    code, _, err = settle(start(CONSTRUCT_DATA_DIR=str(tmp_path)))

    assert code != 0
    assert "is empty" in err and "DJANGO_SECRET_KEY" in err


def test_the_old_development_key_is_gone_from_the_code():
    old = "construct-dev-" + "insecure-change-me"  # spelled in two so this file does not hold it
    skipped = {"__pycache__", "node_modules", "staticfiles", "workspace", "media"}
    holders = []
    for folder, folders, files in os.walk(REPO_ROOT):
        folders[:] = [f for f in folders if not f.startswith(".") and f not in skipped]
        for name in files:
            path = Path(folder) / name
            if path.suffix in {".pyc", ".sqlite3"}:
                continue
            if old in path.read_bytes().decode("utf-8", "replace"):
                holders.append(str(path.relative_to(REPO_ROOT)))
    assert holders == []
