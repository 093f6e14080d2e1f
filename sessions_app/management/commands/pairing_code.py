"""`python manage.py pairing_code`: print a fresh one-time pairing code.

The last line of output is the code alone, so a script can take it with
`tail -n 1`.
"""

from django.core.management.base import BaseCommand, CommandError

from sessions_app.pairing import CODE_TTL_SECONDS, pairing_code_issue, pairing_required


class Command(BaseCommand):
    help = "Print a fresh one-time 6-digit pairing code (the last line of output is the code alone)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--ttl",
            type=int,
            default=CODE_TTL_SECONDS,
            help=f"seconds the code stays valid (default {CODE_TTL_SECONDS})",
        )

    def handle(self, *args, ttl, **options):
        if ttl <= 0:
            raise CommandError("--ttl must be a positive number of seconds")
        if not pairing_required():
            self.stderr.write("Note: CONSTRUCT_REQUIRE_PAIRING is false, so no code is needed.")
        code = pairing_code_issue(ttl_seconds=ttl)
        minutes = max(1, ttl // 60)
        self.stdout.write(
            f"One-time pairing code, valid for {minutes} minute(s). Pair with "
            f'curl -X POST -H "X-Pairing-Code: {code}" http://HOST:PORT/pair '
            "or enter it on the chat page:"
        )
        self.stdout.write(code)
