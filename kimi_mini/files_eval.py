"""The hand-written file questions (`eval/files_hand.json`): documents written by hand (a PDF report, an Excel
budget, Word meeting notes, PowerPoint slides, a CSV), turned into real files by their own libraries and read
by kimiweb's extraction into Postgres (uploaded and extracted as the product does it), then asked about
through the agent loop with the agent's file tools over `documents.library.ConversationLibrary`, its
system message naming the attached files and its tool declaration with the file tools. An answer is correct when
its value passes the checker (as in `hand_eval.check`), and cited when it also cites the part that holds it
as `[file name, label]`."""

from __future__ import annotations

import datetime
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .hand_eval import _SPECIAL, _report, check

FILES_SET = Path(__file__).resolve().parent / "eval" / "files_hand.json"


def document_bytes(spec: dict) -> dict[str, tuple[str, bytes]]:
    """Each hand-written document as (file name, the real file's bytes), written by its own library."""
    from documents.extract.writers import docx_bytes, pdf_bytes, pptx_bytes, xlsx_bytes

    out = {}
    for key, d in spec["documents"].items():
        if "pages" in d:
            data = pdf_bytes(d["pages"])
        elif "sheets" in d:
            data = xlsx_bytes(d["sheets"])
        elif "sections" in d:
            data = docx_bytes([(h, ps) for h, ps in d["sections"]])
        elif "slides" in d:
            data = pptx_bytes([(t, b) for t, b in d["slides"]])
        else:
            data = "".join(",".join(r) + "\n" for r in d["rows"]).encode()
        out[key] = (d["name"], data)
    return out


def load_documents(spec: dict) -> dict:
    """Each hand-written document as a `files.MemoryFile`, extracted from the real file."""
    from .files import extract

    return {key: extract(name, data) for key, (name, data) in document_bytes(spec).items()}


def conversation_libraries(spec: dict) -> dict[tuple, object]:
    """kimiweb's own `ConversationLibrary` (Postgres full-text search) for every set of files a question
    attaches: each file uploaded through `documents.services.accept_upload` into a conversation of the
    user "kimi-mini-eval" and extracted by the worker's `run_extraction` (here, in this process). Needs
    Django settings and a database; earlier eval conversations and files of that user are deleted."""
    import os

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kimiweb.settings")
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.files.uploadedfile import SimpleUploadedFile

    from chat.models import Attachment, Conversation
    from documents import services
    from documents.extraction import run_extraction
    from documents.library import ConversationLibrary

    owner, _ = get_user_model().objects.get_or_create(username="kimi-mini-eval")
    Attachment.objects.filter(owner=owner).delete()  # bytes, text and parts go with them (signals)
    Conversation.objects.filter(owner=owner).delete()
    files = document_bytes(spec)
    libraries = {}
    for keys in {tuple(q["files"]) for q in spec["questions"]}:
        conversation = Conversation.objects.create(owner=owner, title="kimi-mini files eval")
        for key in keys:
            name, data = files[key]
            attachment = services.accept_upload(
                owner, SimpleUploadedFile(name, data), conversation=conversation
            )
            status = run_extraction(attachment.pk)
            if status != "ready":
                raise RuntimeError(f"{name}: extraction ended {status}")
        libraries[keys] = ConversationLibrary(conversation)
    return libraries


def cited(answer: str, name: str, labels: list[str]) -> bool:
    return any(f"[{name}, {label}]" in answer for label in labels)


def evaluate_files(gen, python_tool, progress=None, path: Path = FILES_SET) -> dict:
    from agent.files import with_files_prompt
    from agent.tools import ToolContext, tools_for

    from .data import agent_system_prompt
    from .evaluate import run_agent
    from .files import library_run_tool

    spec = json.loads(path.read_text())
    docs = load_documents(spec)  # the parts, to know which file holds each answer
    libraries = conversation_libraries(spec)

    def one(it):
        files = [docs[k] for k in it["files"]]
        library = libraries[tuple(it["files"])]
        messages = [{"role": "system", "content": agent_system_prompt(datetime.date.today())}]
        with_files_prompt(messages, library)
        tools = [t.schema() for t in tools_for(ToolContext(files_library=library)).values()]
        t0 = time.time()
        r = run_agent(
            gen,
            it["question"],
            it["thinking"],
            library_run_tool(library, python_tool),
            max_rounds=6,
            max_new=256,
            system=messages[0]["content"],
            tools=tools,
        )
        holder = next(f for f in files if any(p.label in it["cite"] for p in f.parts))
        correct = check(r["answer"], it)
        r.update(
            id=it["id"],
            kind=holder.kind,
            thinking=it["thinking"],
            correct=correct,
            cited=correct and cited(r["answer"], holder.name, it["cite"]),
            special_tokens=bool(_SPECIAL.search(r["answer"])),
            seconds=round(time.time() - t0, 1),
        )
        r.pop("messages", None)
        if progress:
            progress.update(1)
        return r

    with ThreadPoolExecutor(getattr(gen, "concurrency", 1)) as pool:
        rows = list(pool.map(one, spec["questions"]))
    return summarize(rows)


def summarize(rows: list[dict]) -> dict:
    def pct(a, b):
        return round(100 * a / b, 1) if b else None

    calls = sum(r["calls_total"] for r in rows)
    off = [r for r in rows if not r["thinking"]]
    kinds = sorted({r["kind"] for r in rows})
    return {
        "n": len(rows),
        "correct_pct": pct(sum(r["correct"] for r in rows), len(rows)),
        "correct_and_cited_pct": pct(sum(r["cited"] for r in rows), len(rows)),
        "by_kind": {
            k: f"{sum(r['cited'] for r in rows if r['kind'] == k)}/{sum(r['kind'] == k for r in rows)}"
            for k in kinds
        },
        "used_file_tools_pct": pct(
            sum(any(t in ("read_file", "search_files", "list_files") for t in r["tools"]) for r in rows),
            len(rows),
        ),
        "tool_calls": calls,
        "valid_tool_call_pct": pct(sum(r["calls_valid"] for r in rows), calls),
        "answers_with_special_tokens": sum(r["special_tokens"] for r in rows),
        "thinking_off_without_reasoning_pct": pct(sum(not r["reasoning"] for r in off), len(off)),
        "rows": rows,
    }


def files_cli(variants, out: Path) -> dict:
    from tqdm import tqdm

    from .build import build
    from .data import build_corpus
    from .evaluate import EngineGenerator
    from .tools import agent_run_tool

    python_tool = agent_run_tool(build_corpus())
    n = len(json.loads(FILES_SET.read_text())["questions"])
    results = json.loads(out.read_text()) if out.exists() else {}
    bar = tqdm(total=n * len(variants), desc="eval files")
    for label, delta, int4 in variants:
        t0 = time.time()
        path = Path("var/kimi-mini/eval-builds") / label
        build(path, delta, int4=int4)
        gen = EngineGenerator(path)
        try:
            res = evaluate_files(gen, python_tool, bar)
        finally:
            gen.close()
        res["seconds"] = round(time.time() - t0)
        results[label] = res
        _report(label, res, out, results)
    bar.close()
    return results


def table(results: dict) -> str:
    head = ["variant", "correct", "correct and cited", "by format (cited)", "used file tools", "valid calls"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, r in results.items():
        kinds = ", ".join(f"{k} {v}" for k, v in r["by_kind"].items())
        lines.append(
            f"| {label} | {r['correct_pct']}% ({r['n']}) | {r['correct_and_cited_pct']}% | {kinds} | "
            f"{r['used_file_tools_pct']}% | {r['valid_tool_call_pct']}% |"
        )
    return "\n".join(lines)
