"""The Celery task that extracts an uploaded file's text (in a child process with limits)."""

from celery import shared_task


@shared_task(name="documents.tasks.extract_file", acks_late=True)
def extract_file(attachment_id: int) -> str:
    from .extraction import run_extraction

    return run_extraction(attachment_id)
