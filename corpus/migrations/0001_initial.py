"""`Document` moves here from the chat app: the table `chat_document` and its rows stay as they are
(this migration changes Django's state only), and the content type is relabelled so permissions and
admin history that name it carry over."""

import django.contrib.postgres.indexes
import django.contrib.postgres.search
from django.db import migrations, models


def relabel_content_type(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    db = schema_editor.connection.alias
    if not ContentType.objects.using(db).filter(app_label="corpus", model="document").exists():
        ContentType.objects.using(db).filter(app_label="chat", model="document").update(app_label="corpus")


def restore_content_type(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    db = schema_editor.connection.alias
    if not ContentType.objects.using(db).filter(app_label="chat", model="document").exists():
        ContentType.objects.using(db).filter(app_label="corpus", model="document").update(app_label="chat")


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ("chat", "0002_attachment_share_options"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="Document",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("url", models.URLField(max_length=1000, unique=True)),
                        ("title", models.CharField(blank=True, default="", max_length=500)),
                        ("text", models.TextField(blank=True, default="")),
                        ("source", models.CharField(blank=True, db_index=True, default="", max_length=200)),
                        ("search_vector", models.GeneratedField(db_persist=True, expression=django.contrib.postgres.search.CombinedSearchVector(django.contrib.postgres.search.SearchVector("title", config="english", weight="A"), "||", django.contrib.postgres.search.SearchVector("text", config="english", weight="B"), django.contrib.postgres.search.SearchConfig("english")), output_field=django.contrib.postgres.search.SearchVectorField())),
                        ("created", models.DateTimeField(auto_now_add=True)),
                        ("updated", models.DateTimeField(auto_now=True)),
                    ],
                    options={
                        "db_table": "chat_document",
                        "indexes": [django.contrib.postgres.indexes.GinIndex(fields=["search_vector"], name="document_fts_idx")],
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(relabel_content_type, restore_content_type),
    ]
