"""`python manage.py audit_verify`: check the audit trail's hash chain.

Exit status 0 and "audit trail OK (N entries)" when intact; otherwise each
problem on its own line and exit status 1, so a cron job or CI can alert.
"""

from django.core.management.base import BaseCommand

from sessions_app.audit import audit_count, audit_verify


class Command(BaseCommand):
    help = "Verify the hash chain of the audit trail; exit 1 when it was tampered with."

    def handle(self, *args, **options):
        problems = audit_verify()
        if problems:
            for problem in problems:
                self.stdout.write(problem)
            raise SystemExit(1)
        self.stdout.write(f"audit trail OK ({audit_count()} entries)")
