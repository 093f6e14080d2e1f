"""Tool calls that wait for a person: ToolApproval, the tools a session always allows, their audit kind."""

import django.db.models.deletion
import sessions_app.models
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('sessions_app', '0002_users'),
    ]

    operations = [
        migrations.AddField(
            model_name='chatsession',
            name='always_allowed',
            field=models.JSONField(blank=True, default=list),
        ),
        migrations.AlterField(
            model_name='auditevent',
            name='kind',
            field=models.CharField(choices=[('pairing_success', 'Pairing Success'), ('pairing_failure', 'Pairing Failure'), ('pairing_lockout', 'Pairing Lockout'), ('socket_connect', 'Socket Connect'), ('socket_refused', 'Socket Refused'), ('device_revoked', 'Device Revoked'), ('login_success', 'Login Success'), ('login_failure', 'Login Failure'), ('approval_decided', 'Approval Decided')], max_length=32),
        ),
        migrations.CreateModel(
            name='ToolApproval',
            fields=[
                ('id', models.CharField(default=sessions_app.models._approval_id, editable=False, max_length=64, primary_key=True, serialize=False)),
                ('turn_id', models.CharField(max_length=64)),
                ('tool_call_id', models.CharField(max_length=200)),
                ('name', models.CharField(max_length=200)),
                ('args', models.JSONField(blank=True, default=dict)),
                ('seq', models.PositiveIntegerField(default=0)),
                ('state', models.CharField(choices=[('pending', 'Pending'), ('approved', 'Approved'), ('denied', 'Denied'), ('timeout', 'Timeout')], default='pending', max_length=16)),
                ('decision', models.CharField(blank=True, choices=[('approve', 'Approve'), ('deny', 'Deny'), ('always', 'Always'), ('timeout', 'Timeout')], default='', max_length=16)),
                ('by', models.CharField(blank=True, default='', max_length=200)),
                ('decided_args', models.JSONField(blank=True, null=True)),
                ('requested_at', models.DateTimeField(auto_now_add=True)),
                ('expires_at', models.DateTimeField()),
                ('decided_at', models.DateTimeField(blank=True, null=True)),
                ('applied_at', models.DateTimeField(blank=True, null=True)),
                ('session', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='approvals', to='sessions_app.chatsession')),
            ],
            options={
                'verbose_name': 'tool approval',
                'ordering': ['-requested_at'],
                'indexes': [models.Index(fields=['state', 'expires_at'], name='approval_state_expires'), models.Index(fields=['session', 'turn_id'], name='approval_session_turn')],
            },
        ),
    ]
