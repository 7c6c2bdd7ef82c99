from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("campaigns", "0004_campaignban"),
    ]

    operations = [
        migrations.AddField(
            model_name="campaign",
            name="archived",
            field=models.BooleanField(default=False),
        ),
    ]
