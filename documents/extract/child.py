"""The extraction child process: reads one file and writes JSON lines to stdout.

    {"event": "total", "anchors": N}
    {"event": "part", "kind", "number", "label", "text", "done": anchors read so far}
    {"event": "done", "extractor": "pypdf 7.1.1", "chars": C}
    {"event": "error", "message": "...", "detail": "ExceptionClass"}

Started by `runner.stream` with an address-space cap, a CPU-time cap and no file writing; the
parent kills it at its wall-clock deadline.
"""

from __future__ import annotations

import json
import sys
import warnings

from .formats import Limits, extractor_name, parts_of, read
from .sniff import Refused


def _emit(out, **event) -> None:
    out.write(json.dumps(event, ensure_ascii=False) + "\n")
    out.flush()


def run(path: str, kind: str, limits: Limits, out) -> int:
    warnings.simplefilter("ignore")
    try:
        total, anchors = read(path, kind, limits)
        _emit(out, event="total", anchors=total)
        chars = 0
        for done, anchor in enumerate(anchors, start=1):
            for part in parts_of(anchor):
                chars += len(part.text)
                if chars > limits.max_chars:
                    raise Refused(
                        f"The file holds more than {limits.max_chars:,} characters of text; at most that much "
                        "is read. Split it and upload the parts."
                    )
                _emit(
                    out,
                    event="part",
                    kind=part.kind,
                    number=part.number,
                    label=part.label,
                    text=part.text,
                    done=done,
                )
            if not anchor.text:
                _emit(out, event="progress", done=done)
        if chars == 0:
            raise Refused(
                "No text was found in the file"
                + (" (a scanned PDF needs OCR, which is not supported)." if kind == "pdf" else ".")
            )
        _emit(out, event="done", extractor=extractor_name(kind), chars=chars)
        return 0
    except Refused as exc:
        _emit(out, event="error", message=exc.message, detail="Refused")
        return 0
    except MemoryError:
        _emit(
            out,
            event="error",
            message="Reading the file needs more memory than is allowed.",
            detail="MemoryError",
        )
        return 0
    except RecursionError:
        _emit(
            out, event="error", message="The file is nested too deeply to be read.", detail="RecursionError"
        )
        return 0
    except Exception as exc:
        _emit(
            out,
            event="error",
            message="The file could not be read: it looks damaged.",
            detail=type(exc).__name__,
        )
        return 0


def main() -> int:
    spec = json.loads(sys.argv[1])
    return run(spec["path"], spec["kind"], Limits(**spec["limits"]), sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
