"""An upload extracted by a real Celery worker on the real Redis broker: enqueued when the upload's
transaction commits, read in the worker's limited child process, ready with its pages."""

import time

import pytest
from celery.contrib.testing.worker import start_worker
from doc_files import pdf_bytes, upload

from documents import services
from documents.models import FilePart, FileText
from kimiweb.celery import app

pytestmark = pytest.mark.django_db(transaction=True)


def wait_for(attachment, statuses=("ready", "failed"), timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = FileText.objects.get(attachment=attachment)
        if text.status in statuses:
            return text
        time.sleep(0.2)
    raise AssertionError(f"still {text.status} after {timeout} s")


@pytest.mark.timeout(120)
def test_upload_is_extracted_by_the_documents_worker_not_the_turns_one(owner, conversation, settings):
    app.loader.import_default_modules()
    assert "documents.tasks.extract_file" in app.tasks
    with start_worker(app, pool="solo", perform_ping_check=False, queues=["agent"], shutdown_timeout=20):
        a = services.accept_upload(
            owner, upload("r.pdf", pdf_bytes(["one", "two pages"])), conversation=conversation
        )
        time.sleep(3)  # a worker for turns only leaves it on the documents queue
        assert FileText.objects.get(attachment=a).status == "queued"
    with start_worker(
        app, pool="solo", perform_ping_check=False, queues=[settings.DOCUMENTS_QUEUE], shutdown_timeout=20
    ):
        text = wait_for(a)
    assert text.status == "ready", text.error
    assert list(FilePart.objects.filter(attachment=a).values_list("label", flat=True)) == ["p. 1", "p. 2"]
