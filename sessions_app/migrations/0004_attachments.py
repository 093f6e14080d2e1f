"""Attachments: files uploaded into a session, for its messages to carry to the model."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("sessions_app", "0003_approvals"),
    ]

    operations = [
        migrations.CreateModel(
            name="Attachment",
            fields=[
                ("id", models.CharField(editable=False, max_length=32, primary_key=True, serialize=False)),
                ("name", models.CharField(max_length=255)),
                ("mime", models.CharField(max_length=100)),
                ("size", models.PositiveBigIntegerField()),
                ("path", models.CharField(editable=False, max_length=255)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("session", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE,
                                              related_name="attachments", to="sessions_app.chatsession")),
            ],
            options={"ordering": ["session", "created_at", "id"]},
        ),
    ]
