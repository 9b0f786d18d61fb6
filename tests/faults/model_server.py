"""The model server of the fault stack: the scripted border double (tests/agent/scripted_model.py) as
a process of its own on a fixed port, so the supervisor can run it, a test can SIGKILL it, and it comes
back where the worker expects it. Every request gets the same slow, deterministic answer: numbered
words (`r0, r1, ...` thinking, `a0, a1, ...` answer), so a duplicate or a lost character is easy to see.

    python tests/faults/model_server.py PORT
"""

from __future__ import annotations

import signal
import sys
from http.server import ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "agent"))
import scripted_model  # noqa: E402

REASONING_WORDS = 120
ANSWER_WORDS = 60
REASONING = " ".join(f"r{i}," for i in range(REASONING_WORDS)) + " "
ANSWER = " ".join(f"a{i}," for i in range(ANSWER_WORDS))


def reply(body, n) -> scripted_model.Reply:
    # ~8 s a turn: long enough to break it in the middle.
    return scripted_model.Reply(reasoning=REASONING, content=ANSWER, piece=6, delay=0.04)


def main() -> None:
    port = int(sys.argv[1])

    class OnPort(ThreadingHTTPServer):
        allow_reuse_address = True

        def __init__(self, address, handler):
            super().__init__(("127.0.0.1", port), handler)

    scripted_model.ThreadingHTTPServer = OnPort
    with scripted_model.ScriptedModelServer(reply) as server:
        print(f"scripted model server on {server.url}", flush=True)
        signal.sigwait({signal.SIGTERM, signal.SIGINT})


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    main()
