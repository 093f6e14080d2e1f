from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"
    verbose_name = "Chat"

    def ready(self):
        from django.conf import settings
        from django.core.exceptions import ImproperlyConfigured

        from chat.agent.mcp import BadServerList, parse_servers
        from construct_core.redaction import register_secret

        register_secret(settings.CONSTRUCT_API_KEY)
        if settings.CONSTRUCT_LOG_FORMAT == "json":
            # Python's warnings go to stderr as plain text otherwise: every line stays JSON.
            import logging

            logging.captureWarnings(True)
        # A malformed server list stops start-up, naming CONSTRUCT_MCP_SERVERS,
        # instead of surfacing on the first turn.
        try:
            parse_servers(settings.CONSTRUCT_MCP_SERVERS)
        except BadServerList as exc:
            raise ImproperlyConfigured(str(exc)) from None
