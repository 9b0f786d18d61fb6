"""The python tool's sandbox: what untrusted code can and cannot do."""

import os
import signal
import socket
import threading
import time

import pytest

from agent.tools import ToolContext, get_tool
from agent.tools.sandbox import Limits, run_python, sandbox_mode

pytestmark = pytest.mark.timeout(60)


def run(code, **limits):
    return run_python(code, Limits(**limits))


def test_the_self_test_finds_bubblewrap_working_here():
    assert sandbox_mode() == "bwrap"


def test_plain_code_runs_and_prints():
    result = get_tool("python").run({"code": "print(sum(range(10)))"}, ToolContext())
    assert result.text == "45" and result.ok


def test_the_network_is_unreachable_even_to_the_hosts_loopback():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    code = f"""
import socket
for host in ("127.0.0.1", "1.1.1.1"):
    try:
        socket.create_connection((host, {port}), timeout=2)
        print(host, "reached")
    except OSError as exc:
        print(host, "blocked", exc.errno)
"""
    try:
        result = run(code)
    finally:
        server.close()
    assert "reached" not in result.stdout
    assert result.stdout.count("blocked") == 2


def test_writes_outside_tmp_are_refused_and_tmp_is_private():
    code = """
import os
for path in ("/etc/kimiweb-test", "/root/x", "/usr/x", os.path.expanduser("~/x")):
    try:
        open(path, "w").write("x")
        print("WROTE", path)
    except OSError as exc:
        print("refused", path, exc.errno)
open("/tmp/scratch", "w").write("fine")
print("tmp ok", open("/tmp/scratch").read())
"""
    result = run(code)
    assert (
        "WROTE /etc" not in result.stdout
        and "WROTE /root" not in result.stdout
        and "WROTE /usr" not in result.stdout
    )
    assert "tmp ok fine" in result.stdout
    assert not os.path.exists("/tmp/scratch") or open("/tmp/scratch").read() != "fine"


def test_the_environment_holds_no_secrets_and_the_user_is_nobody(monkeypatch):
    monkeypatch.setenv("LLM_API_KEY", "sk-secret-do-not-leak")
    result = run("import os, json; print(json.dumps(dict(os.environ))); print(os.getuid(), os.getgid())")
    assert "sk-secret" not in result.stdout
    env_line, ids = result.stdout.strip().splitlines()
    import json

    assert set(json.loads(env_line)) <= {
        "PATH",
        "HOME",
        "LANG",
        "OPENBLAS_NUM_THREADS",
        "OMP_NUM_THREADS",
        "MPLBACKEND",
        "PWD",
    }
    assert ids == "65534 65534"


def test_a_fork_bomb_hits_the_process_limit_and_ends():
    code = """
import os, time
children = 0
try:
    for _ in range(10000):
        if os.fork() == 0:
            time.sleep(5)
            os._exit(0)
        children += 1
except OSError as exc:
    print("fork refused after", children, "errno", exc.errno)
"""
    t0 = time.monotonic()
    result = run(code, processes=32, wall_seconds=10)
    assert "fork refused after" in result.stdout
    assert int(result.stdout.split()[3]) < 32
    assert time.monotonic() - t0 < 10


def test_a_memory_bomb_is_stopped_by_the_address_space_limit():
    result = run("blocks = []\nwhile True:\n    blocks.append(bytearray(64 << 20))", memory_bytes=512 << 20)
    assert "MemoryError" in result.stderr and result.returncode == 1


def test_an_infinite_loop_is_killed_by_the_cpu_limit():
    t0 = time.monotonic()
    result = run("while True: pass", cpu_seconds=1, wall_seconds=20)
    assert result.returncode in (-signal.SIGXCPU, -signal.SIGKILL) and not result.timed_out
    assert time.monotonic() - t0 < 5


def test_a_sleeping_program_is_killed_at_the_wall_timeout():
    t0 = time.monotonic()
    result = get_tool("python").run({"code": "import time; time.sleep(60)"}, ToolContext(timeout=1.5))
    assert time.monotonic() - t0 < 4
    assert "timed out" in result.error


def test_an_output_flood_is_truncated_and_killed():
    t0 = time.monotonic()
    result = run("while True: print('x' * 1000)", output_bytes=4096, flood_bytes=1 << 20)
    assert result.flooded and len(result.stdout) < 5000 and result.stdout.endswith("[output truncated]")
    assert time.monotonic() - t0 < 5


def test_cancel_kills_the_program_and_its_children_at_once():
    cancelled = threading.Event()
    threading.Timer(0.5, cancelled.set).start()
    t0 = time.monotonic()
    result = run_python("import os, time\nos.fork()\ntime.sleep(60)", Limits(wall_seconds=30), cancelled)
    assert result.cancelled and time.monotonic() - t0 < 3
    time.sleep(0.2)
    leftovers = os.popen("pgrep -u 65534 -f 'time.sleep\\(60\\)'").read().split()
    assert leftovers == []


def test_the_tool_tells_the_model_which_limit_it_hit():
    result = get_tool("python").run({"code": "while True: pass"}, ToolContext(timeout=4))
    # CPU limit 2 s within 4 s of wall time: which comes first depends on how busy the machine is.
    assert result.error in ("killed: CPU time limit (2 s) exceeded", "timed out after 4 s (wall clock)")
    assert result.text.endswith(f"[{result.error}]")


def test_without_bubblewrap_the_fallback_is_logged_and_still_limits_the_program(monkeypatch, caplog):
    from agent.tools import sandbox

    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    with caplog.at_level("ERROR", logger="agent.tools.sandbox"):
        assert sandbox._self_test() == "rlimit"
    assert "rlimits ONLY" in caplog.text
    monkeypatch.setattr(sandbox, "_mode", "rlimit")
    monkeypatch.setenv("LLM_API_KEY", "sk-secret-do-not-leak")
    result = run_python("import os; print(sorted(os.environ)); print(os.getuid())", Limits())
    assert not result.sandboxed and "LLM_API_KEY" not in result.stdout
    assert result.stdout.splitlines()[1] == ("65534" if os.geteuid() == 0 else str(os.geteuid()))
    t0 = time.monotonic()
    looped = run_python("while True: pass", Limits(cpu_seconds=1, wall_seconds=20))
    assert looped.returncode in (-signal.SIGXCPU, -signal.SIGKILL) and time.monotonic() - t0 < 10
