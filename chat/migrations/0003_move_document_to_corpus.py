"""`Document` now belongs to the corpus app (corpus 0001 takes it over in Django's state); its table
and rows stay where they are, so this removes it from the chat app's state only."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("chat", "0002_attachment_share_options"),
        ("corpus", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="Document")],
            database_operations=[],
        ),
    ]
