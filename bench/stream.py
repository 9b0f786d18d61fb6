"""Live-stream delivery benchmark: N browsers, each following one turn of E events, through one Daphne.

The worker side is the real `agent.publisher.EventPublisher` (XADD to the turn's Redis stream through
`agent.stream.TurnStream`, then `group_send` over channels-redis), run by a few publisher processes at a fixed per-stream rate. The
browser side is N WebSocket clients on `/ws/conversations/<uuid>/` with a real session cookie, each
resuming its turn and reading the htmx frames the consumer sends (coalesced to ~33 frames/s). Each
frame ends with the turn's `data-seq`, so every event's delivery time is the arrival of the first
frame whose seq covers it: latency = that arrival - the worker's publish call (same machine, one
monotonic clock). It checks that no event is dropped or reordered (the text of every delta arrives,
in order) and samples the Daphne process's memory to price an open connection.

The baseline, measured in the same run with the same publishers and load: readers tailing each
turn's Redis stream directly (XREAD BLOCK), i.e. the raw transport the web tier sits on, and what
LibreChat's published Redis-stream benchmark measures (p99 28 ms at 800 events/s over 16 streams).

    .venv/bin/python bench/stream.py                       # 100 and 500 streams, 2,000 events each
    .venv/bin/python bench/stream.py --streams 100 --events 500 --rate 50

Needs Postgres and Redis (DATABASE_URL's server, REDIS_URL's server); it uses its own database
(`kimiweb_bench`, created and migrated when missing) and its own Redis DB number.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devstack.services import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL  # noqa: E402

SEQ_RE = re.compile(r'data-seq="(\d+)"')
REASONING_SHARE = 0.7  # the first 70% of deltas are thinking, the rest the answer: a thinking turn's shape
ANCHOR = {"name": "LibreChat Redis streams (published)", "streams": 16, "events_s": 800, "p99_ms": 28.0}
TARGET_P99_MS = 50.0


# --- the environment ---------------------------------------------------------------------------------


def configure_environment(args) -> None:
    """Point this process (and every child) at the bench database and Redis DB, before Django loads."""
    base_db = os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)
    parts = urlsplit(base_db)
    os.environ["DATABASE_URL"] = urlunsplit(parts._replace(path="/" + args.database))
    redis_parts = urlsplit(os.environ.get("REDIS_URL", DEFAULT_REDIS_URL))
    os.environ["REDIS_URL"] = urlunsplit(redis_parts._replace(path=f"/{args.redis_db}"))
    os.environ["CELERY_BROKER_URL"] = os.environ["REDIS_URL"]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kimiweb.settings")
    # Production-like Daphne: no DEBUG query log growing with every event, quiet logs.
    os.environ["DEBUG"] = "false"
    os.environ.setdefault("SECRET_KEY", "bench-only-secret-key-" + "x" * 40)
    os.environ["SECURE_SSL_REDIRECT"] = "false"
    os.environ["ALLOWED_HOSTS"] = "127.0.0.1,localhost"
    os.environ["LOG_LEVEL"] = "WARNING"
    os.environ["DB_CONN_MAX_AGE"] = "0"


def ensure_database(name: str) -> None:
    import psycopg

    parts = urlsplit(os.environ["DATABASE_URL"])
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def setup_django(migrate: bool = False) -> None:
    import django

    django.setup()
    if migrate:
        from django.core.management import call_command

        call_command("migrate", verbosity=0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def make_turns(n: int):
    """A bench user with a session, and n conversations each with one running turn."""
    from django.contrib.auth import get_user_model
    from django.test import Client

    from chat.models import Conversation, Message, Turn

    user, _ = get_user_model().objects.get_or_create(username="bench-stream")
    client = Client()
    client.force_login(user)
    cookie = client.cookies["sessionid"].value
    pairs = []
    for i in range(n):
        conversation = Conversation.objects.create(owner=user, title=f"bench {i}")
        message = Message.objects.create(conversation=conversation, role="user", content="stream, please")
        turn = Turn.objects.create(conversation=conversation, user_message=message, status="running")
        pairs.append((str(conversation.uuid), str(turn.uuid)))
    return cookie, pairs


def delete_turns(pairs) -> None:
    import redis
    from django.conf import settings

    from chat import redis as chat_redis
    from chat.models import Conversation

    Conversation.objects.filter(uuid__in=[c for c, _ in pairs]).delete()
    client = redis.Redis.from_url(settings.REDIS_URL)
    keys = chat_redis.keys()
    for i in range(0, len(pairs), 500):
        client.delete(*[keys.stream(t) for _, t in pairs[i : i + 500]])
    client.close()


# --- the worker side ---------------------------------------------------------------------------------


def event_for(k: int, total: int):
    """The k-th event (1-based) of a turn of `total` events."""
    from agent.events import ContentDelta, ReasoningDelta, StepStarted, TurnFinished, TurnStarted

    if k == 1:
        return TurnStarted(thinking=True, model="bench")
    if k == 2:
        return StepStarted(index=0)
    if k == total:
        return TurnFinished(status="done")
    if k <= 2 + REASONING_SHARE * (total - 3):
        return ReasoningDelta(text=f"qr{k}z ")
    return ContentDelta(text=f"qc{k}z ")


def publish_worker(
    turns: list[tuple[int, str, str]], events: int, rate: float, live: bool, start_at: float, stamps
) -> None:
    """One publisher process: every 1/rate s, one event to each of its turns, through EventPublisher.

    `stamps` is shared memory: stamps[i * (events + 1) + k] is when turn i's event k was published
    (0 until it is), so a publisher stopped at the deadline still leaves what it did publish.
    """
    setup_django()
    import redis
    from channels.layers import channel_layers
    from django.conf import settings

    from agent.publisher import EventPublisher
    from agent.stream import TurnStream
    from chat import redis as chat_redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    keys = chat_redis.keys()
    layer = channel_layers.make_backend("default") if live else None
    publishers = [
        EventPublisher(TurnStream(client, keys, turn), layer, keys.group(conversation))
        for _, conversation, turn in turns
    ]
    if live:
        # One event loop (so one channels-redis pool) for all of this process's turns. A real worker
        # runs one turn per process; sharing keeps the bench from opening hundreds of pools.
        shared_loop = publishers[0]._loop
        for publisher in publishers[1:]:
            publisher._loop.close()
            publisher._loop = shared_loop
    while time.monotonic() < start_at:
        time.sleep(0.001)
    for k in range(1, events + 1):
        due = start_at + (k - 1) / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        event = event_for(k, events)
        for (i, _, _), publisher in zip(turns, publishers, strict=True):
            stamps[i * (events + 1) + k] = time.monotonic()
            publisher.publish(event)
    if live:
        publishers[0].close(finished=True)
    client.close()


def start_publishers(pairs, args, live: bool):
    ctx = mp.get_context("spawn")
    stamps = ctx.Array("d", len(pairs) * (args.events + 1), lock=False)
    n = max(1, min(args.publishers, len(pairs)))
    start_at = time.monotonic() + 4.0  # time for the spawned interpreters to load Django
    indexed = [(i, conversation, turn) for i, (conversation, turn) in enumerate(pairs)]
    procs = [
        ctx.Process(
            target=publish_worker, args=(indexed[j::n], args.events, args.rate, live, start_at, stamps)
        )
        for j in range(n)
    ]
    for proc in procs:
        proc.start()
    return procs, stamps, start_at


def stop_publishers(procs, grace: float) -> bool:
    """Wait up to `grace` s for the publishers; stop the ones still going. True if all finished."""
    deadline = time.monotonic() + grace
    for proc in procs:
        proc.join(timeout=max(0.0, deadline - time.monotonic()))
    finished = all(proc.exitcode == 0 for proc in procs)
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=10)
    return finished


# --- the browser side --------------------------------------------------------------------------------


@dataclass
class Socket:
    conversation: str
    turn: str
    frames: list[tuple[float, str]] = field(default_factory=list)
    error: str = ""


async def follow_turn(
    sock: Socket, url: str, cookie: str, origin: str, events: int, connected, go, gate: asyncio.Semaphore
) -> None:
    import websockets

    try:
        # Browsers arrive spread out (and reconnect with jitter); a herd of simultaneous handshakes
        # against one Daphne mostly measures its 5 s handshake timeout, so handshakes go a few at a time.
        async with gate:
            ws = await websockets.connect(
                url,
                additional_headers={"Cookie": f"sessionid={cookie}"},
                origin=origin,
                max_size=None,
                open_timeout=60,
                ping_interval=None,
            )
        async with ws:
            await ws.send(json.dumps({"action": "resume", "turn": sock.turn, "after": 0}))
            connected()
            await go.wait()
            done_marker = f'data-seq="{events}"'
            while True:
                text = await ws.recv()
                sock.frames.append((time.monotonic(), text))
                if done_marker in text:
                    return
    except Exception as exc:  # reported per socket in the results, never hidden
        sock.error = f"{exc.__class__.__name__}: {exc}"
        connected()  # settled, if not connected: the run must not wait for it


async def follow_stream(sock: Socket, redis_url: str, events: int, connected, go) -> None:
    """The baseline reader: XREAD BLOCK on the turn's stream, as a Redis-streams client would."""
    import redis.asyncio as aioredis

    from agent.stream import STREAM_FIELD
    from chat import redis as chat_redis

    client = aioredis.Redis.from_url(redis_url)
    key, last = chat_redis.keys().stream(sock.turn), "0-0"
    try:
        await client.ping()
        connected()
        await go.wait()
        while True:
            reply = await client.xread({key: last}, block=1000, count=500)
            now = time.monotonic()
            for _, entries in reply:
                for entry_id, fields in entries:
                    last = entry_id.decode()
                    seq = int(last.split("-")[0])
                    sock.frames.append((now, json.loads(fields[STREAM_FIELD.encode()])["type"] + f"|{seq}"))
                    if seq == events:
                        return
    except Exception as exc:
        sock.error = f"{exc.__class__.__name__}: {exc}"
        connected()
    finally:
        await client.aclose()


# --- one measurement ---------------------------------------------------------------------------------


@dataclass
class Result:
    mode: str
    streams: int
    events: int
    rate: float
    latencies_ms: list[float]
    published: int
    delivered: int
    duration_s: float
    publishers_kept_up: bool
    dropped: int
    reordered: int
    errors: list[str]
    rss_idle_kib: int = 0
    rss_open_kib: int = 0
    rss_peak_kib: int = 0
    daphne_cpu_s: float = 0.0

    def pct(self, p: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        data = sorted(self.latencies_ms)
        return data[min(len(data) - 1, int(round(p / 100 * (len(data) - 1))))]

    @property
    def per_connection_kib(self) -> float:
        return (self.rss_open_kib - self.rss_idle_kib) / self.streams if self.rss_open_kib else float("nan")


def check_order(text: str, prefix: str, expected: list[int]) -> tuple[int, int]:
    """(dropped, reordered) for the delta markers `q<prefix><k>z` by first appearance in the frames."""
    seen, order = set(), []
    for match in re.finditer(rf"q{prefix}(\d+)z", text):
        k = int(match.group(1))
        if k not in seen:
            seen.add(k)
            order.append(k)
    dropped = len(set(expected) - seen)
    reordered = sum(1 for a, b in zip(order, order[1:], strict=False) if b < a)
    return dropped, reordered


def analyse_socket(sock: Socket, stamps: list[float], events: int, live: bool):
    """(latencies ms, published, delivered, dropped, reordered) for one socket.

    Delivered = events covered by the frames received before the deadline; an event published but not
    yet delivered then is late, not dropped. Dropped and reordered come from the delta text itself.
    """
    published = next((k - 1 for k in range(1, events + 1) if stamps[k] == 0.0), events)
    latencies, covered = [], 0
    for t, text in sock.frames:
        if live:
            seqs = [int(s) for s in SEQ_RE.findall(text)]
            if not seqs:
                continue
            top = max(seqs)
        else:
            top = int(text.rsplit("|", 1)[1])
        for k in range(covered + 1, min(top, published) + 1):
            latencies.append((t - stamps[k]) * 1000)
        covered = max(covered, top)
    covered = min(covered, published)
    dropped = reordered = 0
    if live:
        body = "".join(text for _, text in sock.frames)
        for prefix, kind in (("r", "reasoning.delta"), ("c", "content.delta")):
            expected = [k for k in range(3, covered + 1) if event_for(k, events).type == kind]
            d, r = check_order(body, prefix, expected)
            dropped += d
            reordered += r
    else:
        seqs = [int(text.rsplit("|", 1)[1]) for _, text in sock.frames]
        reordered = sum(1 for a, b in zip(seqs, seqs[1:], strict=False) if b != a + 1)
        dropped = covered - len(set(seqs) & set(range(1, covered + 1)))
    return latencies, published, covered, dropped, reordered


async def run_clients(socks, follow, connect_timeout: float):
    go = asyncio.Event()
    ready = 0
    all_connected = asyncio.Event()

    def connected():
        # Called once a socket is ready (or, after an error, settled); a second call is harmless.
        nonlocal ready
        ready += 1
        if ready >= len(socks):
            all_connected.set()

    tasks = [asyncio.create_task(follow(sock, connected, go)) for sock in socks]
    try:
        await asyncio.wait_for(all_connected.wait(), connect_timeout)
    except TimeoutError:
        pass
    return tasks, go


def measure(mode: str, streams: int, args, daphne=None) -> Result:
    from django.conf import settings

    live = mode == "daphne"
    cookie, pairs = make_turns(streams)
    socks = [Socket(conversation, turn) for conversation, turn in pairs]
    result_holder: dict = {}

    async def main():
        if live:
            port, pid = daphne
            origin = f"http://127.0.0.1:{port}"

            gate = asyncio.Semaphore(args.connect_concurrency)

            def follow(sock, connected, go):
                url = f"ws://127.0.0.1:{port}/ws/conversations/{sock.conversation}/"
                return follow_turn(sock, url, cookie, origin, args.events, connected, go, gate)

            result_holder["rss_idle"] = rss_kib(pid)
        else:

            def follow(sock, connected, go):
                return follow_stream(sock, settings.REDIS_URL, args.events, connected, go)

        tasks, go = await run_clients(socks, follow, connect_timeout=300)
        await asyncio.sleep(1.0)  # let the consumers process every resume before the first event
        if live:
            result_holder["rss_open"] = rss_kib(daphne[1])
            result_holder["cpu0"] = cpu_seconds(daphne[1])
        procs, stamps, start_at = start_publishers(pairs, args, live)
        go.set()
        peak = result_holder.get("rss_open", 0)
        deadline = start_at + args.events / args.rate + args.timeout
        while not all(t.done() for t in tasks) and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            if live:
                peak = max(peak, rss_kib(daphne[1]))
        finished = time.monotonic()
        if live:
            result_holder["cpu"] = cpu_seconds(daphne[1]) - result_holder["cpu0"]
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        kept_up = await asyncio.to_thread(stop_publishers, procs, 10.0)
        result_holder.update(peak=peak, start_at=start_at, finished=finished, stamps=stamps, kept_up=kept_up)

    asyncio.run(main())
    stamps, width = result_holder["stamps"], args.events + 1
    latencies, dropped, reordered, errors, published, delivered, last_frame = [], 0, 0, [], 0, 0, 0.0
    for i, sock in enumerate(socks):
        lat, pub, got, d, r = analyse_socket(sock, stamps[i * width : (i + 1) * width], args.events, live)
        latencies.extend(lat)
        published += pub
        delivered += got
        dropped += d
        reordered += r
        if sock.error:
            errors.append(sock.error)
        if sock.frames:
            last_frame = max(last_frame, sock.frames[-1][0])
    delete_turns(pairs)
    return Result(
        mode=mode,
        streams=streams,
        events=args.events,
        rate=args.rate,
        latencies_ms=latencies,
        published=published,
        delivered=delivered,
        publishers_kept_up=result_holder["kept_up"],
        duration_s=max(1e-9, (last_frame or result_holder["finished"]) - result_holder["start_at"]),
        dropped=dropped,
        reordered=reordered,
        errors=errors,
        rss_idle_kib=result_holder.get("rss_idle", 0),
        rss_open_kib=result_holder.get("rss_open", 0),
        rss_peak_kib=result_holder.get("peak", 0),
        daphne_cpu_s=result_holder.get("cpu", 0.0),
    )


DAPHNE_LOG = Path(os.environ.get("TMPDIR", "/tmp")) / "kimiweb-bench-daphne.log"


def start_daphne(profile: str = "") -> tuple[subprocess.Popen, int]:
    port = free_port()
    profiler = ["-m", "cProfile", "-o", profile] if profile else []
    log = open(DAPHNE_LOG, "ab")  # noqa: SIM115 - the child holds it for its lifetime
    proc = subprocess.Popen(
        [
            sys.executable,
            *profiler,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "kimiweb.asgi:application",
        ],
        cwd=ROOT,
        env=os.environ.copy(),
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    log.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("daphne exited: " + DAPHNE_LOG.read_text()[-2000:])
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, port
        except OSError:
            time.sleep(0.2)
    stop(proc)
    raise RuntimeError("daphne did not start listening within 60 s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# --- report ------------------------------------------------------------------------------------------


def print_table(results: list[Result]) -> None:
    header = (
        f"{'path':<22} {'streams':>7} {'events/stream':>13} {'events/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'max ms':>8} {'late':>6} {'dropped':>7} {'reordered':>9} {'KiB/conn':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        path = "worker→Daphne→socket" if r.mode == "daphne" else "worker→Redis stream"
        per_conn = f"{r.per_connection_kib:.0f}" if r.mode == "daphne" else "—"
        print(
            f"{path:<22} {r.streams:>7} {r.events:>13} {r.delivered / r.duration_s:>9.0f} {r.pct(50):>8.1f} "
            f"{r.pct(99):>8.1f} {max(r.latencies_ms, default=float('nan')):>8.1f} {r.published - r.delivered:>6} "
            f"{r.dropped:>7} {r.reordered:>9} "
            f"{per_conn:>8}"
        )
    print(
        f"{ANCHOR['name']:<22.22} {ANCHOR['streams']:>7} {'':>13} {ANCHOR['events_s']:>9} {'':>8} "
        f"{ANCHOR['p99_ms']:>8.1f}   (anchor, published, other hardware)"
    )
    print()
    by_key = {(r.mode, r.streams): r for r in results}
    for r in results:
        if r.mode != "daphne":
            continue
        base = by_key.get(("redis", r.streams))
        ratio = (
            f"{r.pct(99) / base.pct(99):.2f}x the raw Redis-stream p99 ({base.pct(99):.1f} ms)"
            if base
            else ""
        )
        verdict = "meets" if r.pct(99) < TARGET_P99_MS else "misses"
        print(
            f"{r.streams} streams: Daphne p99 {r.pct(99):.1f} ms = {ratio}; "
            f"{r.pct(99) / ANCHOR['p99_ms']:.2f}x LibreChat's 28 ms; {verdict} the {TARGET_P99_MS:.0f} ms target. "
            f"Daphne RSS idle {r.rss_idle_kib / 1024:.0f} MiB, with sockets open {r.rss_open_kib / 1024:.0f} MiB, "
            f"peak {r.rss_peak_kib / 1024:.0f} MiB. Daphne CPU {r.daphne_cpu_s:.1f} s = "
            f"{1000 * r.daphne_cpu_s / max(1, r.delivered):.2f} ms per event delivered."
        )
        if r.errors:
            print(f"  {len(r.errors)} socket error(s), first: {r.errors[0]} (Daphne's log: {DAPHNE_LOG})")
    for r in results:
        if not r.publishers_kept_up or r.published < r.streams * r.events:
            print(
                f"  {r.mode}, {r.streams} streams: the publishers fell behind the schedule and were stopped at "
                f"the deadline ({r.published} of {r.streams * r.events} events published)."
            )
    print(
        "\nlate = published but not yet delivered when the run ended (backlog); dropped/reordered = delta "
        "text missing or out of order among what was delivered."
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[100, 500], help="concurrent clients/turns")
    parser.add_argument("--events", type=int, default=2000, help="events per turn")
    parser.add_argument("--rate", type=float, default=50.0, help="events/s per turn (a fast token stream)")
    parser.add_argument("--publishers", type=int, default=2, help="worker processes publishing events")
    parser.add_argument("--timeout", type=float, default=120.0, help="extra seconds allowed after publishing")
    parser.add_argument("--connect-concurrency", type=int, default=20, help="WebSocket handshakes at once")
    parser.add_argument("--database", default="kimiweb_bench")
    parser.add_argument("--redis-db", type=int, default=11)
    parser.add_argument("--no-baseline", action="store_true", help="skip the raw Redis-stream baseline")
    parser.add_argument("--profile-daphne", default="", metavar="PATH", help="write Daphne's cProfile here")
    args = parser.parse_args(argv)

    configure_environment(args)
    ensure_database(args.database)
    setup_django(migrate=True)
    print(
        f"{len(args.streams)} sizes x {args.events} events/turn at {args.rate:g} events/s per turn, "
        f"{args.publishers} publisher processes, one Daphne process; {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f} at start\n",
        flush=True,
    )
    results = []
    for streams in args.streams:
        if not args.no_baseline:
            results.append(measure("redis", streams, args))
            print(f"  measured raw Redis streams, {streams} streams", flush=True)
        proc, port = start_daphne(args.profile_daphne)
        try:
            results.append(measure("daphne", streams, args, daphne=(port, proc.pid)))
        finally:
            stop(proc)
        print(f"  measured Daphne, {streams} streams", flush=True)
    print()
    print_table(results)
    return 0 if all(r.dropped == 0 and r.reordered == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
