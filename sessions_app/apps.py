from django.apps import AppConfig


class SessionsAppConfig(AppConfig):
    name = "sessions_app"
    verbose_name = "Sessions"

    def ready(self):
        from sessions_app import connections
        from sessions_app.attachments import connect_signals

        connect_signals()
        connections.connect_signals()
