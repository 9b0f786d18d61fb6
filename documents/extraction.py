"""Runs one file's extraction for the worker: marks it reading, streams the child's parts into FilePart
rows with progress, and ends ready or failed with the child's message. A failed file keeps no parts."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from contextlib import contextmanager

from django.apps import apps
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from .extract.formats import Limits
from .extract.runner import stream
from .models import FilePart, FileText
from .services import notify

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.5  # parts are written, and progress sent, at most this often
FLUSH_PARTS = 200


def limits() -> Limits:
    return Limits(
        max_pages=settings.DOCUMENTS_MAX_PAGES,
        max_sheets=settings.DOCUMENTS_MAX_SHEETS,
        max_sheet_rows=settings.DOCUMENTS_MAX_SHEET_ROWS,
        max_chars=settings.DOCUMENTS_MAX_CHARS,
        max_unzipped_bytes=settings.DOCUMENTS_MAX_UNZIPPED_BYTES,
        max_zip_ratio=settings.DOCUMENTS_MAX_ZIP_RATIO,
    )


@contextmanager
def local_path(attachment):
    """A filesystem path of the file's bytes: the storage's own, or a temporary copy."""
    try:
        yield attachment.file.path
        return
    except NotImplementedError:
        pass
    suffix = os.path.splitext(attachment.name)[1]
    with tempfile.NamedTemporaryFile(suffix=suffix) as tmp, attachment.file.open("rb") as source:
        shutil.copyfileobj(source, tmp)
        tmp.flush()
        yield tmp.name


class Gone(Exception):
    """The file was deleted while it was being read."""


def _save(text: FileText, fields: list[str]) -> None:
    if FileText.objects.filter(pk=text.pk).update(**{f: getattr(text, f) for f in fields}) == 0:
        raise Gone


def run_extraction(attachment_id: int) -> str:
    """Extracts one uploaded file; returns its final status ("ready", "failed" or "gone")."""
    Attachment = apps.get_model("chat", "Attachment")
    try:
        attachment = Attachment.objects.select_related("text").get(pk=attachment_id)
        text = attachment.text
    except (Attachment.DoesNotExist, FileText.DoesNotExist):
        return "gone"
    if text.status in (FileText.Status.READY, FileText.Status.FAILED):
        return text.status  # a redelivered task: already done
    try:
        return _extract(attachment, text)
    except Gone:
        return "gone"


def _extract(attachment, text: FileText) -> str:
    FilePart.objects.filter(attachment=attachment).delete()  # a restart after a lost worker
    text.status, text.error, text.parts_done, text.parts_total = FileText.Status.READING, "", 0, 0
    text.started, text.finished = timezone.now(), None
    _save(text, ["status", "error", "parts_done", "parts_total", "started", "finished"])
    notify(attachment, text)

    pending: list[FilePart] = []
    index = 0
    last_flush = time.monotonic()
    outcome: dict | None = None

    def flush() -> None:
        nonlocal last_flush
        try:
            with transaction.atomic():
                FilePart.objects.bulk_create(pending)
                _save(text, ["parts_done", "parts_total"])
        except IntegrityError as exc:  # the attachment's row is gone
            raise Gone from exc
        pending.clear()
        last_flush = time.monotonic()
        notify(attachment, text)

    try:
        with local_path(attachment) as path:
            events = stream(
                path,
                text.kind,
                limits(),
                timeout=settings.DOCUMENTS_EXTRACT_SECONDS,
                memory_bytes=settings.DOCUMENTS_EXTRACT_MEMORY_BYTES,
            )
            try:
                for event in events:
                    kind = event["event"]
                    if kind == "total":
                        text.parts_total = event["anchors"]
                        _save(text, ["parts_total"])
                        notify(attachment, text)
                    elif kind in ("part", "progress"):
                        if kind == "part":
                            pending.append(
                                FilePart(
                                    attachment=attachment,
                                    index=index,
                                    anchor_kind=event["kind"],
                                    number=event["number"],
                                    label=event["label"][:300],
                                    text=event["text"],
                                )
                            )
                            index += 1
                        text.parts_done = event["done"]
                        if len(pending) >= FLUSH_PARTS or time.monotonic() - last_flush >= FLUSH_SECONDS:
                            flush()
                    else:
                        outcome = event
                        break
            finally:
                events.close()
        if outcome and outcome["event"] == "done":
            flush()
    except Gone:
        raise
    except FileNotFoundError:
        outcome = {
            "event": "error",
            "message": "The file's bytes are missing from storage.",
            "detail": "missing",
        }
    except Exception:
        log.exception("extraction of attachment %s failed", attachment.pk)
        outcome = {"event": "error", "message": "The file could not be read.", "detail": "internal"}

    text.finished = timezone.now()
    if outcome and outcome["event"] == "done":
        text.status, text.extractor, text.chars = (
            FileText.Status.READY,
            outcome["extractor"],
            outcome["chars"],
        )
        text.parts_done = text.parts_total
        _save(text, ["status", "extractor", "chars", "parts_done", "finished"])
    else:
        outcome = outcome or {
            "event": "error",
            "message": "The file could not be read.",
            "detail": "no result",
        }
        FilePart.objects.filter(attachment=attachment).delete()
        text.status, text.error = FileText.Status.FAILED, outcome["message"][:500]
        text.parts_done, text.chars = 0, 0
        _save(text, ["status", "error", "parts_done", "chars", "finished"])
        log.info(
            "attachment %s not extracted: %s (%s)", attachment.pk, outcome["message"], outcome.get("detail")
        )
    notify(attachment, text)
    return text.status
