"""`python manage.py pairing_code [--user NAME]`: print a fresh one-time pairing code.

The last line of output is the code alone, so a script can take it with
`tail -n 1`. With `--user`, the device the code pairs belongs to that user;
without, to the default owner.
"""

from django.contrib.auth import get_user_model
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
        parser.add_argument(
            "--user",
            help="the Django user whose device the code pairs (default: the gateway's owner)",
        )

    def handle(self, *args, ttl, user, **options):
        if ttl <= 0:
            raise CommandError("--ttl must be a positive number of seconds")
        user_id = None
        if user is not None:
            User = get_user_model()
            found = User.objects.filter(**{User.USERNAME_FIELD: user}).first()
            if found is None:
                raise CommandError(
                    f"no user named {user!r}; create one first (manage.py createsuperuser, "
                    "or the admin's Users page)"
                )
            if not found.is_active:
                raise CommandError(f"user {user!r} is inactive")
            user_id = found.pk
        if not pairing_required():
            self.stderr.write("Note: CONSTRUCT_REQUIRE_PAIRING is false, so no code is needed.")
        code = pairing_code_issue(ttl_seconds=ttl, user_id=user_id)
        minutes = max(1, ttl // 60)
        whose = f" for user {user}" if user is not None else ""
        self.stdout.write(
            f"One-time pairing code{whose}, valid for {minutes} minute(s). Pair with "
            f'curl -X POST -H "X-Pairing-Code: {code}" http://HOST:PORT/pair '
            "or enter it on the chat page:"
        )
        self.stdout.write(code)
