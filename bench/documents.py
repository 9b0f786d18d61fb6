"""Document extraction throughput: pages (slides, sheets, sections, line ranges) per second per format,
through the real path (the limited child process, `documents.extract.runner.stream`), each against a
baseline measured in the same run; and pypdf against pdfminer.six on the same PDFs (speed and how many
of the known lines each gets back whole, in order).

Files are generated here with the libraries that write each format (reportlab, python-docx,
python-pptx, openpyxl) from text the bench knows, so the recovered text can be scored.

Baselines: for every format, the same reader in-process (no child, no limits): the ratio is what the
isolation costs. For PDF also pdfminer.six (`extract_text` per page) on the same file. With
`--with-markitdown`, Microsoft's markitdown (pinned, installed once into its own venv under var/bench, never
into the project's) converts the same files: its time and the share of the written lines it gives back,
next to ours.

    .venv/bin/python bench/documents.py              # 300-page PDF and the other formats at that scale
    .venv/bin/python bench/documents.py --pages 100 --repeat 1
    .venv/bin/python bench/documents.py --with-markitdown   # adds markitdown (venv built once, ~1 min)

No Django, no database: extraction is Django-free by design (what the worker adds is one bulk INSERT
per 0.5 s of parts).
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "documents")]

MARKITDOWN_VERSION = "0.1.9"
MARKITDOWN = f"markitdown[pdf,docx,pptx,xlsx]=={MARKITDOWN_VERSION}"
MARKITDOWN_VENV = ROOT / "var" / "bench" / f"markitdown-{MARKITDOWN_VERSION}"

WORDS = (
    "revenue margin fjord widget outlook supply chain quarter growth risk plan market region customer "
    "product launch budget forecast team hiring cost energy price demand model data report result"
).split()


def sentence(rng: random.Random, n: int = 12) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def page_lines(rng: random.Random, n: int, lines: int = 40) -> list[str]:
    return [f"Page {n}: " + sentence(rng, 9)] + [sentence(rng, 10) for _ in range(lines - 1)]


def make_files(pages: int, workdir: Path) -> dict[str, tuple[str, Path, int, str]]:
    """name → (kind, path, anchors, the text written, for scoring)."""
    from doc_files import docx_bytes, pdf_bytes, pptx_bytes, xlsx_bytes

    rng = random.Random(7)
    out = {}
    pdf_pages = ["\n".join(page_lines(rng, n)) for n in range(1, pages + 1)]
    (workdir / "bench.pdf").write_bytes(pdf_bytes(pdf_pages))
    out["pdf"] = ("pdf", workdir / "bench.pdf", pages, "\n".join(pdf_pages))

    sections = [(f"Section {n}", [sentence(rng, 14) for _ in range(8)]) for n in range(1, pages + 1)]
    (workdir / "bench.docx").write_bytes(docx_bytes(sections))
    out["docx"] = (
        "docx",
        workdir / "bench.docx",
        pages,
        "\n".join(h + "\n" + "\n".join(p) for h, p in sections),
    )

    slides = [(f"Slide {n}", "\n".join(sentence(rng, 10) for _ in range(6))) for n in range(1, pages + 1)]
    (workdir / "bench.pptx").write_bytes(pptx_bytes(slides))
    out["pptx"] = ("pptx", workdir / "bench.pptx", pages, "\n".join(t + "\n" + b for t, b in slides))

    sheets = max(1, pages // 30)
    book = {
        f"S{s}": [["region", "q1", "q2", "note"]]
        + [[rng.choice(WORDS), i, i * 2.5, sentence(rng, 5)] for i in range(500)]
        for s in range(1, sheets + 1)
    }
    (workdir / "bench.xlsx").write_bytes(xlsx_bytes(book))
    out["xlsx"] = (
        "xlsx",
        workdir / "bench.xlsx",
        sheets,
        "\n".join(" ".join(map(str, row)) for rows in book.values() for row in rows),
    )

    rows = ["region,q1,q2,note"] + [
        f"{rng.choice(WORDS)},{i},{i * 2.5},{sentence(rng, 5)}" for i in range(pages * 40)
    ]
    (workdir / "bench.csv").write_text("\n".join(rows))
    out["csv"] = ("csv", workdir / "bench.csv", 0, "\n".join(rows))

    md = "\n\n".join(
        f"## Part {n}\n\n" + "\n\n".join(sentence(rng, 14) for _ in range(8)) for n in range(1, pages + 1)
    )
    (workdir / "bench.md").write_text(md)
    out["markdown"] = ("markdown", workdir / "bench.md", pages, md)

    html_parts = [(f"Part {n}", [sentence(rng, 14) for _ in range(8)]) for n in range(1, pages + 1)]
    html = (
        "<html><body><article>"
        + "".join(f"<h2>{h}</h2>" + "".join(f"<p>{p}</p>" for p in ps) for h, ps in html_parts)
        + "</article></body></html>"
    )
    (workdir / "bench.html").write_text(html)
    out["html"] = (
        "html",
        workdir / "bench.html",
        pages,
        "\n".join(h + "\n" + "\n".join(ps) for h, ps in html_parts),
    )

    code = "\n".join(f"def f{i}(x):\n    return x * {i}  # {rng.choice(WORDS)}\n" for i in range(pages * 40))
    (workdir / "bench.py").write_text(code)
    out["code"] = ("code", workdir / "bench.py", 0, code)
    return out


def timed(fn, repeat: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def via_child(kind: str, path: Path):
    from documents.extract.formats import Limits
    from documents.extract.runner import stream

    events = list(stream(str(path), kind, Limits(), timeout=600, memory_bytes=2 << 30))
    if events[-1]["event"] != "done":
        raise RuntimeError(events[-1])
    total = next(e["anchors"] for e in events if e["event"] == "total")
    return total, "\n".join(e["text"] for e in events if e["event"] == "part")


def in_process(kind: str, path: Path):
    from documents.extract.formats import Limits, parts_of, read

    total, anchors = read(str(path), kind, Limits())
    return total, "\n".join(p.text for a in anchors for p in parts_of(a))


def pdfminer_pages(path: Path):
    from pdfminer.high_level import extract_pages
    from pdfminer.layout import LTTextContainer

    texts = [
        "".join(element.get_text() for element in layout if isinstance(element, LTTextContainer))
        for layout in extract_pages(str(path))
    ]
    return len(texts), "\n".join(texts)


def _normal(line: str) -> str:
    """A line as words: table separators (| , tab) and markdown markers dropped, numbers written one way."""
    words = re.sub(r"[|,\t]|^\s*(#+|[-*]|\*\*)\s", " ", line).replace("**", " ").split()
    out = []
    for w in words:
        try:
            out.append(format(float(w), "g"))
        except ValueError:
            out.append(w)
    return " ".join(out)


def recovered(truth: str, text: str) -> float:
    """The share of the written lines that come back whole and in order (a table row as its cells in order)."""
    a = [_normal(line) for line in truth.splitlines() if line.strip()]
    b = [n for n in map(_normal, text.splitlines()) if n and not set(n) <= set("-: ")]
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    return sum(block.size for block in matcher.get_matching_blocks()) / max(len(a), 1)


# Runs inside markitdown's venv: converts each file `repeat` times; one JSON line per file (best s, text, the
# error when it could not convert it).
MARKITDOWN_SCRIPT = """
import json, sys, time
from markitdown import MarkItDown
md = MarkItDown()
repeat = int(sys.argv[1])
for path in sys.argv[2:]:
    best, text, error = float("inf"), "", ""
    for _ in range(repeat):
        t = time.perf_counter()
        try:
            text = md.convert(path).text_content
        except Exception as exc:
            error = str(exc).strip().splitlines()[-1]
            break
        best = min(best, time.perf_counter() - t)
    print(json.dumps({"path": path, "s": best, "text": text, "error": error}), flush=True)
"""


def markitdown_python() -> Path:
    """markitdown's own venv (built once from PyPI), apart from the project's dependencies."""
    python = MARKITDOWN_VENV / "bin" / "python"
    if not python.exists():
        print(f"installing {MARKITDOWN} into {MARKITDOWN_VENV}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(MARKITDOWN_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", MARKITDOWN], check=True)
    return python


def markitdown_convert(paths: list[Path], repeat: int) -> dict[str, dict]:
    out = subprocess.run(
        [str(markitdown_python()), "-c", MARKITDOWN_SCRIPT, str(repeat), *map(str, paths)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    if out.returncode:
        raise SystemExit(f"markitdown failed:\n{out.stderr[-3000:]}")
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    return {r["path"]: r for r in rows}


def compare_markitdown(files, ours: dict[str, tuple[float, str]], repeat: int) -> None:
    """`ours`: format → (in-process seconds, text) as the main table measured them."""
    names = [n for n in ours if files[n][3]]
    theirs = markitdown_convert([files[n][1] for n in names], repeat)
    print(
        f"\nkimiweb's readers (in-process) vs markitdown {MARKITDOWN_VERSION} on the same files; lines back = "
        "written lines (table rows) returned whole and in order"
    )
    print(f"{'format':9} {'ours s':>7} {'ours back':>10} {'md s':>7} {'md back':>8} {'md / ours s':>11}")
    for name in names:
        _, path, _, truth = files[name]
        ours_s, ours_text = ours[name]
        md = theirs[str(path)]
        line = f"{name:9} {ours_s:>7.2f} {recovered(truth, ours_text):>10.1%}"
        if md["error"]:
            print(f"{line}   markitdown failed: {md['error']}")
            continue
        print(f"{line} {md['s']:>7.2f} {recovered(truth, md['text']):>8.1%} {md['s'] / ours_s:>11.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--formats", default="", help="comma-separated subset, e.g. pdf,xlsx")
    parser.add_argument("--skip-pdfminer", action="store_true", help="leave out the pdfminer.six comparison")
    parser.add_argument(
        "--with-markitdown",
        action="store_true",
        help="compare with markitdown (its venv built once in var/bench)",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        files = make_files(args.pages, Path(tmp))
        print(f"extraction, {args.pages}-page scale; best of {args.repeat}; ratio = child / in-process")
        print(
            f"{'format':9} {'anchors':>8} {'size':>8} {'child s':>8} {'anchors/s':>10} {'in-proc s':>10} {'ratio':>6}"
        )
        wanted = set(filter(None, args.formats.split(","))) or set(files)
        inproc: dict[str, tuple[float, str]] = {}
        for name, (kind, path, _, _) in files.items():
            if name not in wanted:
                continue
            child_s, (total, _) = timed(lambda kind=kind, path=path: via_child(kind, path), args.repeat)
            inproc_s, (_, text) = timed(lambda kind=kind, path=path: in_process(kind, path), args.repeat)
            inproc[name] = (inproc_s, text)
            size = path.stat().st_size
            print(
                f"{name:9} {total:>8} {size / 1024:>7.0f}K {child_s:>8.2f} {total / child_s:>10.1f} "
                f"{inproc_s:>10.2f} {child_s / inproc_s:>6.2f}"
            )

        if args.with_markitdown:
            compare_markitdown(files, inproc, args.repeat)
        if args.skip_pdfminer or "pdf" not in wanted:
            return
        print("\nPDF readers on the same file (in-process, per page): pypdf vs pdfminer.six")
        kind, path, pages, truth = files["pdf"]
        py_s, py_text = inproc["pdf"]
        pm_s, (_, pm_text) = timed(lambda: pdfminer_pages(path), 1)
        print(f"{'reader':12} {'s':>7} {'pages/s':>8} {'lines back':>11}")
        print(f"{'pypdf':12} {py_s:>7.2f} {pages / py_s:>8.1f} {recovered(truth, py_text):>10.1%}")
        print(f"{'pdfminer.six':12} {pm_s:>7.2f} {pages / pm_s:>8.1f} {recovered(truth, pm_text):>10.1%}")
        print(f"pypdf speed-up over pdfminer.six: {pm_s / py_s:.1f}x")


if __name__ == "__main__":
    main()
