"""Operator actions of the admin console, each through the code the rest of kimiweb uses: the chat's
Stop (`chat.services.cancel`), its turn creation (`chat.services.rerun_turn`) and the corpus importer
(`corpus.services`)."""

from __future__ import annotations

from chat import services as chat_services
from chat.models import Turn
from corpus import services as corpus_services

CANCELLABLE = (Turn.Status.QUEUED, Turn.Status.RUNNING)
RERUNNABLE = (Turn.Status.FAILED,)


def cancel_turn(turn: Turn) -> Turn:
    """The chat's own Stop: a flag for the worker, or cancelled here if no worker claimed it."""
    chat_services.cancel(turn)
    return turn


def rerun_turn(turn: Turn) -> Turn:
    """A new queued turn answering the same user message, with the configured model; enqueued on commit."""
    return chat_services.rerun_turn(turn)


def cancel_turns(turns) -> tuple[int, int]:
    """Cancel those of `turns` that are queued or running; returns (cancelled, skipped)."""
    cancelled = skipped = 0
    for turn in turns:
        if turn.status not in CANCELLABLE:
            skipped += 1
            continue
        cancel_turn(turn)
        cancelled += 1
    return cancelled, skipped


def rerun_turns(turns) -> tuple[list[Turn], int]:
    """Re-run those of `turns` that failed; returns (the new turns, how many were skipped)."""
    created, skipped = [], 0
    for turn in turns:
        if turn.status not in RERUNNABLE:
            skipped += 1
            continue
        created.append(rerun_turn(turn))
    return created, skipped


def import_documents(*, files, urls, source: str) -> corpus_services.ImportResult:
    """The import form's files and URLs into the corpus, with the same code as `manage.py import_documents`."""
    return corpus_services.import_uploads_and_urls(files=files, urls=urls, source=source)
