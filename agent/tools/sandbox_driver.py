"""The interpreter that runs inside the sandbox: reads one JSON request a line, runs the code in a
namespace kept for the whole session, answers with what it printed and the files and figures it made.

This file runs under the sandbox's Python with nothing of kimiweb importable: standard library only.
Protocol (the host is agent/tools/sandbox.py): request `{"code": str}`; answer `{"stdout": str,
"stderr": str, "files": [{"name", "content_type", "data" (base64)}], "threads": int}`.
"""

import ast
import base64
import json
import mimetypes
import os
import resource
import signal
import sys
import traceback

WORK, OUT, CAPTURE = "/work", "/work/out", "/run/kimiweb"
KEEP = int(os.environ.pop("KIMIWEB_OUTPUT_BYTES", "65536"))
FILE_CAP = int(os.environ.pop("KIMIWEB_FILES_BYTES", str(32 << 20)))
NPROC = int(os.environ.pop("KIMIWEB_NPROC", "64"))


def main() -> None:
    proto_in = os.fdopen(os.dup(0), "r", encoding="utf-8")
    proto_out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    # Counted in this run's own user namespace, so the cap is this run's alone.
    resource.setrlimit(resource.RLIMIT_NPROC, (NPROC, NPROC))
    os.makedirs(OUT, exist_ok=True)
    os.chdir(WORK)
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    seen = _snapshot()
    base_threads = len(os.listdir("/proc/self/task"))
    for line in proto_in:
        request = json.loads(line)
        stdout, stderr = _run(request["code"], namespace)
        files, seen = _collect(seen)
        _reap()
        answer = {
            "stdout": stdout,
            "stderr": stderr,
            "files": files,
            "threads": len(os.listdir("/proc/self/task")) - base_threads,
        }
        proto_out.write(json.dumps(answer) + "\n")
        proto_out.flush()


def _run(code: str, namespace: dict) -> tuple[str, str]:
    outs = [os.open(f"{CAPTURE}/{n}", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600) for n in ("out", "err")]
    saved = [os.dup(1), os.dup(2)]
    os.dup2(outs[0], 1)
    os.dup2(outs[1], 2)
    try:
        tree = ast.parse(code, "<python>", "exec")
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        exec(compile(tree, "<python>", "exec"), namespace)
        if last is not None:
            value = eval(compile(ast.Expression(last.value), "<python>", "eval"), namespace)
            if value is not None:
                print(repr(value))
    except BaseException as exc:  # the program's own error, shown to the model as Python prints it
        if isinstance(exc, SystemExit) and exc.code in (None, 0):
            pass
        else:
            tb = exc.__traceback__
            while tb is not None and tb.tb_frame.f_code.co_filename != "<python>":
                tb = tb.tb_next
            traceback.print_exception(type(exc), exc, tb)
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except OSError:
                pass
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
    texts = []
    for fd in outs:
        size = os.lseek(fd, 0, os.SEEK_END)
        data = os.pread(fd, KEEP, 0)
        os.close(fd)
        text = data.decode("utf-8", errors="replace")
        texts.append(text + "\n[output truncated]" if size > KEEP else text)
    return texts[0], texts[1]


def _snapshot() -> dict:
    state = {}
    for folder, _, names in os.walk(OUT):
        for name in names:
            path = os.path.join(folder, name)
            try:
                st = os.stat(path)
            except OSError:
                continue
            state[path] = (st.st_mtime_ns, st.st_size)
    return state


def _collect(seen: dict) -> tuple[list, dict]:
    files, budget = [], FILE_CAP
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        import io

        for number in pyplot.get_fignums():
            figure = pyplot.figure(number)
            buffer = io.BytesIO()
            try:
                figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
            except Exception as exc:
                print(f"figure {number} could not be drawn: {exc}", file=sys.stderr)
                continue
            if len(buffer.getvalue()) <= budget:
                budget -= len(buffer.getvalue())
                files.append(_entry(f"figure-{number}.png", "image/png", buffer.getvalue()))
        pyplot.close("all")
    now = _snapshot()
    for path, stamp in sorted(now.items()):
        if seen.get(path) == stamp or stamp[1] > budget:
            continue
        with open(path, "rb") as handle:
            data = handle.read(budget + 1)
        budget -= len(data)
        name = os.path.relpath(path, OUT)
        files.append(_entry(name, mimetypes.guess_type(name)[0] or "application/octet-stream", data))
    return files, now


def _entry(name: str, content_type: str, data: bytes) -> dict:
    return {"name": name, "content_type": content_type, "data": base64.b64encode(data).decode()}


def _reap() -> None:
    """Nothing the program started outlives its call: kill every other process in this pid namespace."""
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        pass
    while True:  # every child was sent SIGKILL: wait for them all (orphans are bwrap's init's to reap)
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            break


if __name__ == "__main__":
    main()
