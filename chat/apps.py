from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"
    verbose_name = "Chat"

    def ready(self):
        from django.conf import settings

        from chat.errors import register_secret
        from construct_site.daphne_compat import patch_daphne_close_codes, patch_daphne_message_limit

        from django.core.exceptions import ImproperlyConfigured

        from chat.agent.mcp import BadServerList, parse_servers

        register_secret(settings.CONSTRUCT_API_KEY)
        # A malformed server list stops start-up, naming CONSTRUCT_MCP_SERVERS,
        # instead of surfacing on the first turn.
        try:
            parse_servers(settings.CONSTRUCT_MCP_SERVERS)
        except BadServerList as exc:
            raise ImproperlyConfigured(str(exc)) from None
        # Under daphne (the CLI and runserver alike): close with 1011, and let
        # frames past our own limit reach us so we can answer MESSAGE_TOO_LARGE.
        patch_daphne_close_codes()
        patch_daphne_message_limit(settings.CONSTRUCT_MAX_FRAME_BYTES)
        # Daphne's access log bypasses logging: redact ?token= there too.
        from chat.security import patch_daphne_access_log

        patch_daphne_access_log()
