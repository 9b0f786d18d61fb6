"""The python tool as a code interpreter: the scientific stack, state kept within a turn and never
beyond it, figures and files stored as the owner's attachments, and a refusal when isolation fails."""

import csv
import io
import json
import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from agent import events as ev
from agent.client import ModelClient
from agent.loop import AgentLoop, LoopConfig
from agent.tools import ToolContext, get_tool, sandbox

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "agent"))
from scripted_model import Reply, ScriptedModelServer  # noqa: E402

pytestmark = pytest.mark.timeout(120)


def python(code, **ctx):
    return get_tool("python").run({"code": code}, ToolContext(**ctx))


def test_the_scientific_stack_is_there_for_real():
    code = """
import numpy as np, pandas as pd, scipy.integrate, sympy, matplotlib
x = sympy.symbols("x")
print(np.arange(4).sum(), pd.DataFrame({"a": [1, 2]}).a.sum(), round(scipy.integrate.quad(lambda t: t, 0, 2)[0], 6))
print(sympy.integrate(x**2, x))
"""
    result = python(code)
    assert result.ok, result.text
    assert result.text.splitlines() == ["6 3 2.0", "x**3/3"]


def test_state_persists_between_calls_of_one_turn_and_not_into_another():
    try:
        assert python("data = [1, 2, 3]\nopen('/work/kept.txt', 'w').write('here')", session="turn-a").ok
        again = python("print(sum(data), open('/work/kept.txt').read())", session="turn-a")
        assert again.text == "6 here"
        other = python("print(data)", session="turn-b")
        assert "NameError" in other.text
        assert "No such file" in python("open('/work/kept.txt')", session="turn-b").text
    finally:
        sandbox.end_session("turn-a")
        sandbox.end_session("turn-b")
    assert "NameError" in python("print(data)", session="turn-a").text  # ended with its turn
    sandbox.end_session("turn-a")


@pytest.fixture
def turn(db):
    from chat.models import Conversation, Message, Turn

    owner = get_user_model().objects.create_user("owner", password="pw-owner-123")
    conversation = Conversation.objects.create(owner=owner, title="files")
    message = Message.objects.create(conversation=conversation, role="user", content="plot it")
    return Turn.objects.create(conversation=conversation, user_message=message)


def test_a_csv_and_a_figure_are_stored_for_the_owner_and_404_for_anyone_else(
    turn, client, settings, tmp_path
):
    from chat.attachments import AttachmentSink
    from chat.models import Attachment

    settings.MEDIA_ROOT = str(tmp_path)
    code = """
import pandas as pd, matplotlib.pyplot as plt
frame = pd.DataFrame({"x": [1, 2, 3], "y": [1, 4, 9]})
frame.to_csv("/work/out/squares.csv", index=False)
frame.plot(x="x", y="y")
plt.show()
"""
    result = python(code, files=AttachmentSink(turn))
    assert result.ok, result.text
    names = sorted(f.name for f in result.files)
    assert names == ["figure-1.png", "squares.csv"]
    assert "[file squares.csv, 16 B, text/csv: shown to the user]" in result.text
    rows = {a.name: a for a in Attachment.objects.filter(turn=turn)}
    assert (
        rows["figure-1.png"].content_type == "image/png"
        and rows["figure-1.png"].owner == turn.conversation.owner
    )
    csv_file = next(f for f in result.files if f.name == "squares.csv")

    assert client.get(csv_file.url).status_code == 404  # anonymous
    client.force_login(get_user_model().objects.create_user("intruder", password="pw-intruder-123"))
    assert client.get(csv_file.url).status_code == 404
    client.force_login(turn.conversation.owner)
    response = client.get(csv_file.url)
    assert response.status_code == 200 and "attachment" in response["Content-Disposition"]
    body = b"".join(response.streaming_content).decode()
    assert list(csv.reader(io.StringIO(body))) == [["x", "y"], ["1", "1"], ["2", "4"], ["3", "9"]]
    image = client.get(next(f for f in result.files if f.name.endswith(".png")).url)
    assert image["Content-Type"] == "image/png" and b"".join(image.streaming_content).startswith(b"\x89PNG")

    conversation = turn.conversation
    conversation.share_token = "tok-files"
    conversation.save()
    client.logout()
    shared = f"/s/tok-files/files/{csv_file.id}"
    assert client.get(shared).status_code == 404  # shared, but not with its files
    conversation.share_files = True
    conversation.save()
    assert client.get(shared).status_code == 200


CLEANUP: list[Path] = []


@pytest.fixture(autouse=True)
def _remove_fake_binaries():
    yield
    while CLEANUP:
        shutil.rmtree(CLEANUP.pop(), ignore_errors=True)


def _failing_bwrap(tmp_path):
    """A bwrap that fails the way a kernel refusing user namespaces makes the real one fail (in a
    folder the sandbox's pool uid can reach: pytest's own is root's alone)."""
    tmp_path = Path(tempfile.mkdtemp(prefix="kimiweb-fake-bwrap-"))
    CLEANUP.append(tmp_path)
    script = tmp_path / "bwrap"
    script.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    os.chmod(tmp_path, 0o755)
    return str(script)


@pytest.mark.parametrize("binary", ["missing", "no-namespaces"])
def test_with_isolation_impossible_the_turn_completes_and_the_model_is_told_why(
    binary, monkeypatch, tmp_path
):
    path = "/nonexistent/bwrap" if binary == "missing" else _failing_bwrap(tmp_path)
    monkeypatch.setenv("KIMIWEB_SANDBOX_BWRAP", path)
    call = ("python", json.dumps({"code": "print('would run unisolated')"}))
    with ScriptedModelServer([Reply(tool_calls=[call]), Reply(content="The sandbox is off.")]) as server:
        loop = AgentLoop(ModelClient(server.url, "scripted"), LoopConfig(), {"python": get_tool("python")})
        events = list(loop.run([{"role": "user", "content": "run it"}]))
        told = [m for m in server.requests[1]["messages"] if m["role"] == "tool"][0]["content"]
    finished = [e for e in events if isinstance(e, ev.ToolCallFinished)]
    assert finished[0].status == "error"
    assert "the code sandbox is unavailable on this server" in told
    assert (
        "no bubblewrap binary" if binary == "missing" else "No permissions to create new namespace"
    ) in told
    assert "would run unisolated" not in told
    assert events[-1].status == "done" and events[-1].content == "The sandbox is off."


def test_healthz_reports_the_workers_self_test_and_stays_200_when_the_sandbox_is_off(client, db, monkeypatch):
    from chat import sandbox_status

    assert sandbox_status.publish_status()["available"]
    body = client.get("/healthz").json()
    assert body["sandbox"]["state"] == "ok" and "bwrap" in body["sandbox"]["bwrap"]
    monkeypatch.setenv("KIMIWEB_SANDBOX_BWRAP", "/nonexistent/bwrap")
    sandbox.sandbox_status(refresh=True)
    sandbox_status.publish_status()
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["sandbox"]["state"] == "unavailable"
    assert "no bubblewrap binary" in response.json()["sandbox"]["reason"]
