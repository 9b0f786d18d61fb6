"""`Document` moved from the chat app to the corpus app: a database migrated before the move keeps its
documents, their search index and the permissions that name the model."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("chat", "0002_attachment_share_options"), ("corpus", None)]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state([t for t in targets if t[1] is not None]).apps


def latest():
    executor = MigrationExecutor(connection)
    return executor.loader.graph.leaf_nodes()


def test_documents_written_before_the_move_are_found_after_it():
    from django.contrib.auth.models import Permission
    from django.contrib.contenttypes.models import ContentType

    old = migrate(BEFORE)
    OldDocument = old.get_model("chat", "Document")
    OldDocument.objects.create(
        url="https://a.org/tomato", title="Tomatoes", text="Stake them and water deeply."
    )
    OldDocument.objects.create(
        url="https://a.org/compost", title="Compost", text="Turn the pile.", source="garden"
    )
    ContentType.objects.clear_cache()
    old_type, _ = ContentType.objects.get_or_create(app_label="chat", model="document")
    Permission.objects.get_or_create(content_type=old_type, codename="add_document", name="Can add document")

    new = migrate(latest())
    ContentType.objects.clear_cache()

    from corpus.models import Document

    assert new.get_model("corpus", "Document")._meta.db_table == "chat_document"
    assert {d.url for d in Document.objects.all()} == {"https://a.org/tomato", "https://a.org/compost"}
    assert Document.objects.get(source="garden").title == "Compost"
    # The generated search column and its index came along with the table.
    from django.contrib.postgres.search import SearchQuery

    found = Document.objects.filter(search_vector=SearchQuery("watering", config="english"))
    assert [d.url for d in found] == ["https://a.org/tomato"]
    assert ContentType.objects.get_for_model(Document).pk == old_type.pk
    assert Permission.objects.filter(content_type__app_label="corpus", codename="add_document").exists()
    assert not ContentType.objects.filter(app_label="chat", model="document").exists()


def test_the_move_reverses_without_losing_rows():
    migrate(latest())
    from corpus.models import Document

    Document.objects.create(url="https://a.org/keep", title="Keep", text="kept")
    old = migrate(BEFORE)
    assert old.get_model("chat", "Document").objects.get().url == "https://a.org/keep"
    migrate(latest())
    assert Document.objects.get().title == "Keep"
