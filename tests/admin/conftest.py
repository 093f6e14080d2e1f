"""The admin's tests log in as a staff superuser, `operator`."""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

OPERATOR_PASSWORD = "correct horse battery staple"


@pytest.fixture
def fast_hashes(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins


@pytest.fixture
def admin_client(fast_hashes):
    get_user_model().objects.create_superuser("operator", "op@example.com", OPERATOR_PASSWORD)
    client = Client()
    assert client.login(username="operator", password=OPERATOR_PASSWORD)
    return client
