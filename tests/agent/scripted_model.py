"""A scripted OpenAI-compatible model server: a real HTTP server on a free port streaming real SSE.

The test double at the one network border the agent does not own. Each request gets the next reply
from a script (or a function of the request); replies say what to stream: reasoning, content, tool
calls (ids `functions.NAME:IDX`, arguments in fragments), or an HTTP error, with optional pauses.

A request with `continue_final_message` is answered as a greedy server answers it: the reply the
script gives for the conversation without the unfinished assistant message, less the text that
message already holds (so an interrupted step continued gives the uninterrupted step's text). With
`continuation=False` such a request gets HTTP 400, as from a remote API without the flag.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Reply:
    reasoning: str = ""
    content: str = ""
    tool_calls: list[tuple[str, str]] = field(default_factory=list)  # (name, raw arguments)
    finish_reason: str | None = None  # default: tool_calls if any, else stop
    status: int = 200  # anything else: answer with this HTTP error and no stream
    piece: int = 8  # characters per streamed delta
    delay: float = 0.0  # pause before each chunk
    usage: tuple[int, int] | None = None  # (prompt, completion); default: estimated from sizes


def chunks_for(reply: Reply, prompt_chars: int) -> list[dict]:
    def chunk(delta=None, finish=None, usage=None):
        body = {
            "id": "chatcmpl-scripted",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "scripted",
        }
        body["choices"] = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
        if usage:
            body["usage"] = usage
        return body

    out = [chunk({"role": "assistant", "content": ""})]
    for i in range(0, len(reply.reasoning), reply.piece):
        out.append(chunk({"reasoning_content": reply.reasoning[i : i + reply.piece]}))
    for i in range(0, len(reply.content), reply.piece):
        out.append(chunk({"content": reply.content[i : i + reply.piece]}))
    for idx, (name, args) in enumerate(reply.tool_calls):
        head = {"index": idx, "id": f"functions.{name}:{idx}", "type": "function"}
        out.append(chunk({"tool_calls": [{**head, "function": {"name": name, "arguments": ""}}]}))
        for i in range(0, len(args), reply.piece):
            out.append(
                chunk({"tool_calls": [{"index": idx, "function": {"arguments": args[i : i + reply.piece]}}]})
            )
    finish = reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")
    out.append(chunk({}, finish))
    completion = (len(reply.reasoning) + len(reply.content) + sum(len(a) for _, a in reply.tool_calls)) // 4
    prompt, completion = reply.usage or (prompt_chars // 4, completion)
    out.append(
        chunk(
            usage={
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            }
        )
    )
    return out


def continued(reply: Reply, reasoning: str, content: str) -> Reply:
    """What is left of `reply` after an unfinished message that holds `reasoning` and `content`."""
    if content:
        rest = reply.content[len(content) :] if reply.content.startswith(content) else reply.content
        return replace(reply, reasoning="", content=rest)
    rest = reply.reasoning[len(reasoning) :] if reply.reasoning.startswith(reasoning) else reply.reasoning
    return replace(reply, reasoning=rest)


class ScriptedModelServer:
    """`with ScriptedModelServer(script) as server:` then point the client at `server.url`."""

    def __init__(self, script, continuation: bool = True):
        self.script = script  # a list of Reply (consumed in order) or a function(request, n) -> Reply
        self.continuation = continuation
        self.requests: list[dict] = []
        self.disconnects = 0  # streams the client closed before the end
        self.timings: list[
            tuple[float, float]
        ] = []  # per request: (body read, last byte written), perf_counter
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def setup(self):
                super().setup()
                # Small SSE writes must not wait on Nagle + delayed ACK (40 ms stalls per chunk).
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                began = time.perf_counter()
                with outer.lock:
                    n = len(outer.requests)
                    outer.requests.append(body)
                reply = outer.next_reply(body, n)
                if reply.status != 200:
                    payload = json.dumps({"error": {"message": f"scripted {reply.status}"}}).encode()
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                prompt_chars = len(json.dumps(body["messages"]))
                try:
                    for c in chunks_for(reply, prompt_chars):
                        if reply.delay:
                            time.sleep(reply.delay)
                        self.wfile.write(f"data: {json.dumps(c)}\n\n".encode())
                        self.wfile.flush()
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.wfile.flush()
                    with outer.lock:
                        outer.timings.append((began, time.perf_counter()))
                except (BrokenPipeError, ConnectionResetError):
                    with outer.lock:
                        outer.disconnects += 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def next_reply(self, body: dict, n: int) -> Reply:
        if not body.get("continue_final_message"):
            return self._scripted(body, n)
        if not self.continuation:
            return Reply(status=400)
        *prompt, partial = body["messages"]
        reply = self._scripted({**body, "messages": prompt}, n)
        return continued(reply, partial.get("reasoning_content") or "", partial.get("content") or "")

    def _scripted(self, body: dict, n: int) -> Reply:
        if callable(self.script):
            return self.script(body, n)
        return self.script[n] if n < len(self.script) else Reply(content="(script exhausted)")

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
