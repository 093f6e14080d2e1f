from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"
    verbose_name = "Chat"

    def ready(self):
        from django.conf import settings

        from chat.errors import register_secret

        register_secret(settings.CONSTRUCT_API_KEY)
