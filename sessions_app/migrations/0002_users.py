"""Every session, device and memory note belongs to a user; per-user quotas.

What existed before belongs to the default owner, a staff user made here when
there is anything to own (and on first need otherwise, by
sessions_app.services.default_owner): an upgrade loses nothing, and every
device's token keeps working, as the owner's.
"""

import django.db.models.deletion
from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.db import migrations, models

# The same name as sessions_app.services.DEFAULT_OWNER (a migration keeps its own copy).
DEFAULT_OWNER = "owner"


def owner_for_existing_rows(apps, schema_editor):
    User = apps.get_model(*settings.AUTH_USER_MODEL.split("."))
    owned = [apps.get_model("sessions_app", name)
             for name in ("ChatSession", "PairedDevice", "MemoryNote", "UsageRecord")]
    if not any(model.objects.exists() for model in owned):
        return
    owner, _ = User.objects.get_or_create(
        username=DEFAULT_OWNER,
        defaults={"is_staff": True, "is_superuser": True, "password": make_password(None)},
    )
    for model in owned:
        model.objects.filter(user__isnull=True).update(user=owner)


class Migration(migrations.Migration):

    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("sessions_app", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="chatsession",
            name="user",
            field=models.ForeignKey(null=True, on_delete=django.db.models.deletion.CASCADE,
                                    related_name="chat_sessions", to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddField(
            model_name="paireddevice",
            name="user",
            field=models.ForeignKey(null=True, on_delete=django.db.models.deletion.CASCADE,
                                    related_name="devices", to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddField(
            model_name="memorynote",
            name="user",
            field=models.ForeignKey(null=True, on_delete=django.db.models.deletion.CASCADE,
                                    related_name="memory_notes", to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddField(
            model_name="usagerecord",
            name="user",
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL,
                                    related_name="usage", to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddField(
            model_name="pairingcode",
            name="user",
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE,
                                    related_name="+", to=settings.AUTH_USER_MODEL),
        ),
        migrations.RunPython(owner_for_existing_rows, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="chatsession",
            name="user",
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE,
                                    related_name="chat_sessions", to=settings.AUTH_USER_MODEL),
        ),
        migrations.AlterField(
            model_name="paireddevice",
            name="user",
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE,
                                    related_name="devices", to=settings.AUTH_USER_MODEL),
        ),
        migrations.AlterField(
            model_name="memorynote",
            name="user",
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE,
                                    related_name="memory_notes", to=settings.AUTH_USER_MODEL),
        ),
        migrations.AlterField(
            model_name="auditevent",
            name="kind",
            field=models.CharField(choices=[
                ("pairing_success", "Pairing Success"), ("pairing_failure", "Pairing Failure"),
                ("pairing_lockout", "Pairing Lockout"), ("socket_connect", "Socket Connect"),
                ("socket_refused", "Socket Refused"), ("device_revoked", "Device Revoked"),
                ("login_success", "Login Success"), ("login_failure", "Login Failure"),
            ], max_length=32),
        ),
        migrations.CreateModel(
            name="UserQuota",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False,
                                           verbose_name="ID")),
                ("daily_budget_usd", models.DecimalField(
                    blank=True, decimal_places=4, help_text="USD per day; empty: CONSTRUCT_USER_DAILY_BUDGET_USD",
                    max_digits=12, null=True)),
                ("monthly_budget_usd", models.DecimalField(
                    blank=True, decimal_places=4,
                    help_text="USD per calendar month; empty: CONSTRUCT_USER_MONTHLY_BUDGET_USD",
                    max_digits=12, null=True)),
                ("daily_tokens", models.PositiveBigIntegerField(
                    blank=True, help_text="input and output tokens per day; empty: CONSTRUCT_USER_DAILY_TOKENS",
                    null=True)),
                ("user", models.OneToOneField(on_delete=django.db.models.deletion.CASCADE,
                                              related_name="quota", to=settings.AUTH_USER_MODEL)),
            ],
            options={"verbose_name": "quota"},
        ),
    ]
