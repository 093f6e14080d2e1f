"""`manage.py mock_llm`: the scripted streaming LLM server (see chat.devserver.mock_llm)."""

from django.core.management.base import BaseCommand

from chat.devserver.mock_llm import serve


class Command(BaseCommand):
    help = (
        "Run a local OpenAI- and Anthropic-compatible streaming server with scripted replies "
        "(directives such as [[chunks=N]], [[tool:NAME {...}]] in the user message)."
    )
    # It touches neither the database nor the models: start at once.
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=11435, help="port to listen on (0 picks a free one)")
        parser.add_argument("--host", default="127.0.0.1", help="address to bind")

    def handle(self, *args, **options):
        serve(options["host"], options["port"])
