from django.apps import AppConfig


class DevServerConfig(AppConfig):
    """An app only so that `manage.py mock_llm` is found; it has no models."""

    name = "chat.devserver"
    label = "devserver"
    verbose_name = "Development server"
