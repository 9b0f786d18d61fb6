"""Per-call overhead of the python tool's sandbox, against a plain unsandboxed subprocess in the same run.

Three ways to run a trivial program (`print(1)`), each --calls times, with the median and p90 wall time:
  baseline  a plain `python -I -c` subprocess of the sandbox's own interpreter (no isolation at all)
  cold      a new sandbox per call: bwrap, its namespaces, a new interpreter, the call, the kill
  warm      one more call to an interpreter already kept for the turn (what every call after a turn's
            first costs)
and, to show what the scientific stack adds, `import numpy, pandas, matplotlib.pyplot` in a cold sandbox
and then warm. Results go to bench/results/sandbox.md with the load average of the machine.

    .venv/bin/python bench/sandbox.py --calls 20
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.tools import sandbox, sandbox_env  # noqa: E402

HEAVY = "import numpy, pandas, matplotlib.pyplot"


def timed(fn, n: int, label: str) -> list[float]:
    times = []
    for _ in tqdm(range(n), desc=label, leave=False):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return times


def baseline(code: str):
    root = sandbox_env.default_root()
    env = {"LD_LIBRARY_PATH": str(root / "lib"), "MPLBACKEND": "Agg", "MPLCONFIGDIR": str(root / "mplconfig")}
    env |= {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # as in the sandbox
    return lambda: subprocess.run(
        [str(sandbox_env.python_path(root)), "-I", "-c", code], env=env, check=True, capture_output=True
    )


def cold(code: str):
    def once():
        result = sandbox.run_python(code)
        assert not result.error, result

    return once


def warm(code: str, session: sandbox.Session):
    def once():
        result = session.run(code)
        assert not result.error, result

    return once


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "sandbox.md")
    args = parser.parse_args()
    status = sandbox.sandbox_status()
    if not status.available:
        sys.exit(f"the sandbox is unavailable here: {status.reason}")
    load_before = os.getloadavg()
    rows = []
    session = sandbox.Session()
    heavy_session = sandbox.Session()
    try:
        session.run("pass")
        heavy_session.run(HEAVY)
        cases = [
            ("print(1)", "baseline: plain subprocess", baseline("print(1)")),
            ("print(1)", "sandbox, cold (new interpreter)", cold("print(1)")),
            ("print(1)", "sandbox, warm (kept interpreter)", warm("print(1)", session)),
            (HEAVY, "baseline: plain subprocess", baseline(HEAVY)),
            (HEAVY, "sandbox, cold (new interpreter)", cold(HEAVY)),
            (HEAVY, "sandbox, warm (already imported)", warm(HEAVY, heavy_session)),
        ]
        base = {}
        for code, label, fn in cases:
            n = max(3, args.calls // 4) if code == HEAVY and "warm" not in label else args.calls
            times = timed(fn, n, f"{code[:12]} {label}")
            median = statistics.median(times)
            if label.startswith("baseline"):
                base[code] = median
            p90 = sorted(times)[int(0.9 * (len(times) - 1))]
            rows.append((code, label, n, median, p90, median / base[code]))
    finally:
        session.close()
        heavy_session.close()
    load_after = os.getloadavg()
    lines = [
        "# python sandbox: per-call overhead",
        "",
        f"`.venv/bin/python bench/sandbox.py --calls {args.calls}`; bwrap `{status.bwrap}`; "
        f"worker uid {os.geteuid()}; load average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
        f"({os.cpu_count()} CPUs).",
        "",
        "| program | how | calls | median ms | p90 ms | x baseline |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for code, label, n, median, p90, ratio in rows:
        lines.append(f"| `{code}` | {label} | {n} | {median:.1f} | {p90:.1f} | {ratio:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
