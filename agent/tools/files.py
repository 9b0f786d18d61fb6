"""The file tools: `list_files`, `read_file` (by page, slide, sheet or section range) and `search_files`,
over `ToolContext.files_library`. They are declared only when the conversation has files
(`agent.tools.tools_for`), so a conversation without files sees the default tool list unchanged.

Every part read is headed by its citation, `[report.pdf, p. 3]`; `read_file` stops before its output
would pass the tool's max_chars and says which pages to read next.
"""

from __future__ import annotations

import re

from ..files import FileInfo, FileLibrary, describe, unit
from .base import Tool, ToolContext, ToolError, ToolResult, truncate

SEARCH_LIMIT = 8
MAX_SEARCH_LIMIT = 20
_HEAD = re.compile(r"^\[([^\[\]\n]+?), ([^\[\]\n]+)\](?: |$)", re.M)


def _library(ctx: ToolContext) -> FileLibrary:
    if ctx.files_library is None:
        raise ToolError("no files are attached to this conversation")
    return ctx.files_library


def _find(files: list[FileInfo], name: str) -> FileInfo:
    """The file called `name`: exactly, else ignoring case, else the one whose name contains it."""
    name = (name or "").strip().strip("[]").strip()
    if not name:
        raise ToolError("give the file's name (list_files shows them)")
    for match in (
        lambda f: f.name == name,
        lambda f: f.name.lower() == name.lower(),
        lambda f: name.lower() in f.name.lower(),
    ):
        found = [f for f in files if match(f)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise ToolError(f"{name!r} matches several files: " + ", ".join(f.name for f in found))
    names = ", ".join(f.name for f in files) or "none"
    raise ToolError(f"there is no file named {name!r}; the attached files are: {names}")


def _anchors(info: FileInfo) -> str:
    if info.kind in ("pdf", "pptx"):
        return f"{unit(info.kind, 2)} 1-{info.parts_total}"
    labels = info.labels[:30]
    more = f", ... ({len(info.labels) - 30} more)" if len(info.labels) > 30 else ""
    return "; ".join(f"{i + 1}: {label}" for i, label in enumerate(labels)) + more


def run_list(arguments: dict, ctx: ToolContext) -> ToolResult:
    try:
        files = _library(ctx).list()
    except ToolError as exc:
        return ToolResult(f"Error: {exc}.", str(exc))
    if not files:
        return ToolResult("No files are attached to this conversation.")
    lines = []
    for info in files:
        line = f"- {describe(info)}"
        if info.status == "ready" and info.parts_total:
            line += f" — {_anchors(info)}"
        elif info.status == "reading":
            line += f" — {info.parts_done} of {info.parts_total or '?'} {unit(info.kind, 2)} read so far"
        elif info.status == "failed":
            line += f" — {info.error}"
        lines.append(line)
    return ToolResult(truncate("\n".join(lines), ctx.max_chars))


def _int(arguments: dict, key: str, default: int | None) -> int | None:
    value = arguments.get(key, default)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except (TypeError, ValueError) as exc:
        raise ToolError(f"{key} must be a whole number, not {value!r}") from exc
    if number < 1:
        raise ToolError(f"{key} must be 1 or more")
    return number


def run_read(arguments: dict, ctx: ToolContext) -> ToolResult:
    try:
        library = _library(ctx)
        info = _find(library.list(), str(arguments.get("name") or ""))
        if info.status == "failed":
            raise ToolError(f"{info.name} could not be read: {info.error}")
        start = _int(arguments, "start", 1)
        end = _int(arguments, "end", None)
        if info.kind in ("text", "code", "csv"):
            last = 1 << 31
        else:
            last = info.parts_total or (1 << 31)
        if start > last:
            raise ToolError(f"{info.name} has {info.parts_total} {unit(info.kind, info.parts_total)}")
        end = min(end if end is not None else last, last)
        if end < start:
            raise ToolError("end must not be before start")
        parts = library.read(info.name, start, end)
    except ToolError as exc:
        return ToolResult(f"Error: {exc}.", str(exc))

    budget = ctx.max_chars - 200  # room for the closing note
    out: list[str] = []
    used = 0
    next_number: int | None = None
    for part in parts:
        block = f"{part.citation}\n{part.text or '(no text on this ' + unit(info.kind) + ')'}"
        if out and used + len(block) + 2 > budget:
            next_number = part.number
            break
        if not out and len(block) > budget:  # one part longer than the whole budget
            block = block[:budget] + " [...]"
        out.append(block)
        used += len(block) + 2
    if not out:
        if info.status != "ready":
            return ToolResult(
                f"{info.name} is still being read ({info.parts_done} of {info.parts_total or '?'} "
                f"{unit(info.kind, 2)} so far); nothing from {start} on is ready yet. Try again in a moment."
            )
        return ToolResult(f"No text in {info.name} between {start} and {end}.")
    text = "\n\n".join(out)
    if next_number is not None:
        text += (
            f"\n\n[Output cut to fit. Continue with read_file name={info.name!r} start={next_number}"
            f" end={end} ({unit(info.kind, 2)} {next_number}-{end}).]"
        )
    elif info.status != "ready":
        text += f"\n\n[{info.name} is still being read: {info.parts_done} of {info.parts_total} so far.]"
    return ToolResult(text)


def run_search(arguments: dict, ctx: ToolContext) -> ToolResult:
    query = str(arguments.get("query") or "").strip()
    try:
        library = _library(ctx)
        if not query:
            raise ToolError("give a search query")
        name = None
        if arguments.get("name"):
            name = _find(library.list(), str(arguments["name"])).name
        limit = min(_int(arguments, "limit", SEARCH_LIMIT) or SEARCH_LIMIT, MAX_SEARCH_LIMIT)
        hits = library.search(query, limit, name)
    except ToolError as exc:
        return ToolResult(f"Error: {exc}.", str(exc))
    if not hits:
        return ToolResult(f"No passages in the attached files match {query!r}.")
    lines = [f"{hit.citation} {hit.snippet}" for hit in hits]
    lines.append("\nRead a whole part with read_file (name, start = its number).")
    return ToolResult(truncate("\n".join(lines), ctx.max_chars))


LIST_FILES = Tool(
    name="list_files",
    description="List the files the user attached to this conversation: name, type, size in pages/slides/"
    "sheets/sections, whether they are ready, and their section and sheet names.",
    parameters={"type": "object", "properties": {}, "required": []},
    run=run_list,
)

READ_FILE = Tool(
    name="read_file",
    description="Read an attached file by page (PDF), slide (PowerPoint), sheet (Excel) or section (Word, "
    "Markdown, HTML) number, or by line (text, code, CSV rows). Each part comes headed by its citation, "
    "e.g. [report.pdf, p. 3]. Long ranges are cut; the output says where to continue.",
    parameters={
        "type": "object",
        "properties": {
            "name": {"type": "string", "description": "The file name, as list_files shows it."},
            "start": {
                "type": "integer",
                "description": "First page/slide/sheet/section/line to read (1-based).",
            },
            "end": {
                "type": "integer",
                "description": "Last one to read (inclusive); default: as far as fits.",
            },
        },
        "required": ["name"],
    },
    run=run_read,
)

SEARCH_FILES = Tool(
    name="search_files",
    description="Full-text search in the attached files; returns the best matching passages with their "
    "citations ([file, p. N]) and the matching words in **bold**.",
    parameters={
        "type": "object",
        "properties": {
            "query": {"type": "string", "description": "Words to look for."},
            "name": {"type": "string", "description": "Search only this file (optional)."},
            "limit": {
                "type": "integer",
                "description": f"At most this many passages (default {SEARCH_LIMIT}).",
            },
        },
        "required": ["query"],
    },
    run=run_search,
)


def parts_shown(tool_name: str, result: str) -> dict[str, list[str]]:
    """The file parts a `read_file` or `search_files` result shows, by file name, from the citation that
    heads each part or hit (`[report.pdf, p. 3]`), in order and without repeats."""
    if tool_name not in ("read_file", "search_files") or not result:
        return {}
    shown: dict[str, list[str]] = {}
    for name, label in _HEAD.findall(result):
        labels = shown.setdefault(name, [])
        if label not in labels:
            labels.append(label)
    return shown


FILE_TOOLS: dict[str, Tool] = {tool.name: tool for tool in (LIST_FILES, READ_FILE, SEARCH_FILES)}
