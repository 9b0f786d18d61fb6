"""The `make run` supervisor keeps its promises: a dead program is restarted alone with backoff, its
whole process group goes with it, Ctrl-C stops everything (even a program that ignores SIGTERM), and a
SIGKILLed supervisor takes its programs with it. Real processes, a real `python -m devstack.supervisor`."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
# A program that leaves a grandchild in its group, as a Celery main process leaves its pool.
WITH_CHILD = "sh -c 'sleep 600 & echo child $!; wait'"
STEADY = "sh -c 'echo steady up; exec sleep 600'"


class Supervised:
    """`python -m devstack.supervisor` over a Procfile, in its own group like a terminal's job."""

    def __init__(self, tmp_path: Path, procfile: str, *args: str):
        (tmp_path / "Procfile").write_text(procfile)
        self.log_path = tmp_path / "supervisor.log"
        self.log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "devstack.supervisor", "--procfile", str(tmp_path / "Procfile"), *args],
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, pattern: str, count: int = 1, timeout: float = 20) -> list[re.Match]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = list(re.finditer(pattern, self.text()))
            if len(found) >= count:
                return found
            assert self.proc.poll() is None, f"supervisor exited:\n{self.text()}"
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} x{count} not seen in:\n{self.text()}")

    def pids(self, name: str) -> list[int]:
        return [int(m.group(1)) for m in re.finditer(rf"{name} started \(pid (\d+)\)", self.text())]

    def close(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log.close()


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_dead(pids, timeout: float = 10) -> list[int]:
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


@pytest.fixture
def supervised(tmp_path):
    made = []

    def start(procfile: str, *args: str) -> Supervised:
        made.append(Supervised(tmp_path, procfile, *args))
        return made[-1]

    yield start
    for s in made:
        s.close()


@pytest.mark.timeout(60)
def test_a_killed_program_is_restarted_alone_and_its_group_dies_with_it(supervised):
    sup = supervised(f"worker: {WITH_CHILD}\nweb: {STEADY}\n")
    sup.wait_for(r"worker +\| child (\d+)")
    sup.wait_for(r"web +\| steady up")
    [worker] = sup.pids("worker")
    [web] = sup.pids("web")
    grandchild = int(sup.wait_for(r"worker +\| child (\d+)")[0].group(1))
    assert alive(grandchild)

    os.kill(worker, signal.SIGKILL)
    sup.wait_for(r"worker started \(pid \d+\)", count=2)
    assert wait_dead([grandchild]) == [], "the dead leader's group must be killed"
    assert "worker killed by SIGKILL" in sup.text()
    assert sup.pids("web") == [web] and alive(web), "the other program keeps running"
    sup.wait_for(r"worker +\| child (\d+)", count=2)


@pytest.mark.timeout(60)
def test_a_program_that_keeps_failing_is_restarted_with_a_growing_backoff(supervised):
    sup = supervised("flaky: sh -c 'echo try; exit 3'\n", "--backoff", "0.2")
    sup.wait_for(r"flaky restarts in", count=4, timeout=20)
    delays = [float(d) for d in re.findall(r"flaky restarts in ([\d.]+) s", sup.text())]
    assert delays[:4] == [0.2, 0.4, 0.8, 1.6]
    assert "flaky exited with 3" in sup.text()


@pytest.mark.timeout(60)
def test_ctrl_c_stops_every_program_and_group_even_one_that_ignores_sigterm(supervised):
    stubborn = "sh -c 'trap \"\" TERM; sleep 600 & echo child $!; wait; sleep 600'"
    sup = supervised(f"stubborn: {stubborn}\nworker: {WITH_CHILD}\n", "--stop-timeout", "2")
    children = [int(m.group(1)) for m in sup.wait_for(r"\| child (\d+)", count=2)]
    leaders = sup.pids("stubborn") + sup.pids("worker")
    os.killpg(sup.proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    assert sup.proc.wait(timeout=15) == 0
    assert wait_dead(leaders + children) == []


@pytest.mark.timeout(60)
def test_a_sigkilled_supervisor_takes_its_programs_with_it(supervised):
    sup = supervised(f"web: {STEADY}\n")
    sup.wait_for(r"web +\| steady up")
    [web] = sup.pids("web")
    os.kill(sup.proc.pid, signal.SIGKILL)  # no handler runs: PR_SET_PDEATHSIG does the work
    sup.proc.wait()
    assert wait_dead([web]) == []
