from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('sessions_app', '0007_operator_events'),
    ]

    operations = [
        migrations.AddField(
            model_name='chatsession',
            name='auto_named',
            field=models.BooleanField(default=False),
        ),
    ]
