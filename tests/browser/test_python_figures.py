"""A plot the model makes shows in the chat: a live stack (Daphne, a real Celery worker) where the
border-double model asks the python tool for matplotlib code, the real sandbox runs it, the figure is
stored as the owner's attachment, and Chromium shows it inline in the tool card, live and after reload."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import log_in
from playwright.sync_api import expect
from test_live_stack import send, start_worker

from chat.models import Attachment, Turn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "agent"))
from scripted_model import Reply, ScriptedModelServer  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PLOT = """
import numpy as np, matplotlib.pyplot as plt
x = np.linspace(0, 2 * np.pi, 200)
plt.plot(x, np.sin(x))
plt.title("sine")
plt.show()
np.savetxt("/work/out/sine.csv", np.c_[x, np.sin(x)], delimiter=",")
"""


def plot_then_answer(body, n):
    if not any(m["role"] == "tool" for m in body["messages"]):
        return Reply(reasoning="A plot will show it. ", tool_calls=[("python", json.dumps({"code": PLOT}))])
    return Reply(content="Here is the sine curve.")


def test_a_plot_made_by_the_model_shows_as_an_image_in_the_chat(
    live_url, stack_db, new_page, user, page_errors
):
    with ScriptedModelServer(plot_then_answer) as model:
        worker = start_worker(stack_db, model.url)
        try:
            page = new_page()
            log_in(page, live_url, user)
            send(page, live_url, "Plot a sine wave")
            turn = Turn.objects.filter(conversation__owner=user).latest("created")
            u = turn.uuid
            expect(page.locator(f"#status-{u}")).to_have_attribute("data-status", "done", timeout=90_000)
            told = [m for m in model.requests[1]["messages"] if m["role"] == "tool"][0]["content"]
            assert "figure-1.png" in told and "shown to the user" in told

            for _ in range(2):  # live, then after a reload (rebuilt from Postgres)
                card = page.locator(f"#trace-{u} .tool-python")
                expect(card).to_have_count(1)
                page.evaluate("document.querySelectorAll('details').forEach(d => { d.open = true; })")
                image = card.locator(".tool-figure img")
                expect(image).to_be_visible()
                page.wait_for_function(
                    "img => img.complete && img.naturalWidth > 100", arg=image.element_handle()
                )
                expect(card.locator(".file-chip")).to_contain_text("sine.csv")
                page.reload()
            rows = Attachment.objects.filter(turn=turn).order_by("name")
            assert [a.name for a in rows] == ["figure-1.png", "sine.csv"]
            assert all(a.tool_call is not None and a.owner == user for a in rows)
        finally:
            worker.stop()
    assert not page_errors, page_errors
