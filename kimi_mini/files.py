"""Traces that read the user's attached files: fictional documents written in each format by the libraries
that write them (`documents.extract.writers`), read back by kimiweb's own extraction
(`documents.extract.formats`, the code the worker runs), and served to the agent's real file tools
(`list_files`, `read_file`, `search_files`) through an in-memory `FileLibrary`. The conversation's system
message and tool declaration are the ones the agent sends when files are attached (`with_files_prompt`,
`tools_for`), and answers cite `[file name, label]` exactly as `read_file` heads each part.

Flows: search the file, then read the page the hit names, then answer with its citation; read a short file
whole; read a sheet and compute with `python`; list the attached files; summarise a file part by part. A
quarter of the traces have two files attached (a report and a spreadsheet), and the question names one
of them by its kind."""

from __future__ import annotations

import json
import random
import re
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

from agent.files import FileHit, FileInfo, FilePartText, with_files_prompt
from agent.tools import FILE_TOOLS, ToolContext, ToolError, tools_for

from .data import _FIRST, _PRODUCTS, Example, RunTool, _name, _Trace
from .phrasing import show_num, typo

MONTHS = "January February March April May June July August September October November December".split()
_DEPTS = ["sales", "research", "finance", "logistics", "customer service", "production", "marketing"]
_SUFFIX = ["Foods", "Works", "Textiles", "Labs", "Logistics", "Energy", "Instruments", "Tools"]
_PROJECTS = ["Harbor", "Lantern", "Falcon", "Meadow", "Granite", "Orchid", "Summit", "Beacon"]
_FILLER = [
    "Figures are rounded and unaudited.",
    "This section summarises the year for the board.",
    "Details are in the appendix.",
    "The numbers were checked by the finance team.",
    "Comparisons are with the previous year unless stated otherwise.",
]


# ---------------------------------------------------------------- the library the file tools read


@dataclass
class MemoryFile:
    name: str
    kind: str
    parts: list[FilePartText]  # in order, as the worker stores them (long anchors in several chunks)
    total: int  # pages, slides, sheets, sections or line ranges


_STOP = {
    "the",
    "a",
    "an",
    "of",
    "in",
    "is",
    "what",
    "does",
    "how",
    "to",
    "for",
    "and",
    "or",
    "on",
    "at",
    "by",
}


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s", "ly"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def _terms(text: str) -> list[str]:
    return [_stem(w) for w in re.findall(r"\w+", text.lower()) if w not in _STOP]


class MemoryLibrary:
    """`agent.files.FileLibrary` over files held in memory: `search` works like the Postgres one
    (every word must match, stems approximated, else any word; ranked by matches; a snippet of 15-40
    words with the matches in **bold**)."""

    def __init__(self, files: list[MemoryFile]):
        self.files = {f.name: f for f in files}

    def list(self) -> list[FileInfo]:
        out = []
        for f in self.files.values():
            labels: list[str] = []
            for p in f.parts:
                if not labels or labels[-1] != p.label:
                    labels.append(p.label)
            out.append(FileInfo(f.name, f.kind, f.total, "ready", labels, parts_done=f.total))
        return out

    def read(self, name: str, start: int, end: int) -> list[FilePartText]:
        f = self.files.get(name)
        if f is None:
            return []
        if f.kind in ("text", "code", "csv"):
            lowest = max((p.number for p in f.parts if p.number <= start), default=start)
            return [p for p in f.parts if lowest <= p.number <= end]
        return [p for p in f.parts if start <= p.number <= end]

    def search(self, query: str, limit: int, name: str | None = None) -> list[FileHit]:
        wanted = _terms(query)
        if not wanted:
            return []
        files = [self.files[name]] if name in self.files else [] if name else list(self.files.values())
        for need_all in (True, False):
            scored = []
            for fi, f in enumerate(files):
                for pi, p in enumerate(f.parts):
                    words = _terms(p.text)
                    hits = [w for w in wanted if w in words]
                    if hits and (not need_all or len(set(hits)) == len(set(wanted))):
                        scored.append((-sum(words.count(w) for w in set(hits)), fi, pi, f, p))
            if scored:
                break
        scored.sort(key=lambda s: s[:3])
        return [
            FileHit(f.name, p.label, p.number, _snippet(p.text, set(wanted))) for *_, f, p in scored[:limit]
        ]


def _snippet(text: str, wanted: set[str]) -> str:
    words = text.split()
    hit = [bool(set(_terms(w)) & wanted) for w in words]
    lo = max(0, hit.index(True) - 8) if any(hit) else 0
    return " ".join(
        f"**{w}**" if h else w for w, h in zip(words[lo : lo + 30], hit[lo : lo + 30], strict=True)
    )


def extract(name: str, data: bytes) -> MemoryFile:
    """The file read as the worker reads it: its kind by extension, its anchors by kimiweb's readers,
    each anchor cut into stored parts."""
    from documents.extract.formats import Limits, parts_of, read
    from documents.extract.sniff import kind_for

    kind = kind_for(name)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("file." + name.rsplit(".", 1)[-1])
        path.write_bytes(data)
        total, anchors = read(str(path), kind, Limits())
        parts = [
            FilePartText(name, part.kind, part.number, part.label, part.text)
            for anchor in anchors
            for part in parts_of(anchor)
        ]
    return MemoryFile(name, kind, parts, total)


def library_run_tool(library: MemoryLibrary, fallback: RunTool) -> RunTool:
    """The agent's real file tools over `library`; other tools (python) through `fallback`."""

    def run(name: str, args: dict) -> str:
        if name not in FILE_TOOLS:
            return fallback(name, args)
        ctx = ToolContext(timeout=30.0, files_library=library)
        try:
            return FILE_TOOLS[name].run(args, ctx).text
        except ToolError as exc:
            return f"Error: {exc}"

    return run


# ---------------------------------------------------------------- fictional documents


@dataclass
class Fact:
    questions: list[str]  # "{doc}" is how the question names the file ("the report", "the pdf", ...)
    query: str  # what the model searches for
    value: str  # what the part's text holds and the answer states
    answer: str  # the answer's sentence, before its citation


@dataclass
class Unit:
    heading: str
    sentences: list[str]
    facts: list[Fact]


def _person(rng) -> str:
    return f"{rng.choice(_FIRST)} {_name(rng, 2)}"


def report_units(rng: random.Random, org: str, year: int) -> list[Unit]:
    town, town2 = _name(rng, 3), _name(rng, 2) + "ford"
    founded = rng.randint(1950, year - 5)
    product = rng.choice(_PRODUCTS)
    staff = rng.randint(40, 9000)
    dept, head = rng.choice(_DEPTS), _person(rng)
    revenue = round(rng.uniform(2, 900), 1)
    change = rng.randint(2, 35)
    up = rng.random() < 0.7
    profit = round(revenue * rng.uniform(0.03, 0.2), 1)
    proj, lead_name = rng.choice(_PROJECTS), _person(rng)
    month, proj_year = rng.choice(MONTHS), year + rng.randint(1, 3)
    budget = rng.randint(50, 990)
    incidents, before = rng.randint(0, 30), rng.randint(5, 40)
    open_year = year + rng.randint(1, 4)
    n_staff = show_num(rng, staff) if staff >= 1000 else str(staff)
    units = [
        Unit(
            "Overview",
            [f"{org} was founded in {founded} in {town}.", f"Its main products are {product}."],
            [
                Fact(
                    [
                        "When was {org} founded, according to {doc}?",
                        "what year was {org} founded? it's in {doc}",
                        "According to {doc}, in which year did {org} start?",
                    ],
                    "founded",
                    str(founded),
                    f"{org} was founded in {founded}, in {town}",
                ),
                Fact(
                    [
                        "What does {org} make, according to {doc}?",
                        "what are {org}'s main products? see {doc}",
                    ],
                    "main products",
                    product,
                    f"{org}'s main products are {product}",
                ),
            ],
        ),
        Unit(
            "Staff",
            [f"At the end of {year}, {org} employed {n_staff} people.", f"The head of {dept} is {head}."],
            [
                Fact(
                    [
                        "How many people does {org} employ according to {doc}?",
                        "how many employees does {doc} mention",
                        "What's the headcount in {doc}?",
                    ],
                    "employed people",
                    n_staff,
                    f"At the end of {year}, {org} employed {n_staff} people",
                ),
                Fact(
                    [f"Who is the head of {dept}, according to {{doc}}?", f"who leads {dept}? check {{doc}}"],
                    f"head of {dept}",
                    head,
                    f"The head of {dept} is {head}",
                ),
            ],
        ),
        Unit(
            "Finances",
            [
                f"Revenue in {year} was {revenue} million euros, {'up' if up else 'down'} {change}% on the "
                "year before.",
                f"Net profit was {profit} million euros.",
            ],
            [
                Fact(
                    [
                        f"What was the revenue in {year} according to {{doc}}?",
                        f"how much revenue did {{org}} make in {year}? it's in {{doc}}",
                        "What does {doc} say about revenue?",
                    ],
                    "revenue",
                    f"{revenue} million euros",
                    f"Revenue in {year} was {revenue} million euros, {'up' if up else 'down'} {change}% on "
                    "the year before",
                ),
                Fact(
                    ["What was the net profit, according to {doc}?", "net profit in {doc}?"],
                    "net profit",
                    f"{profit} million euros",
                    f"Net profit was {profit} million euros",
                ),
            ],
        ),
        Unit(
            "Projects",
            [
                f"The {proj} project, led by {lead_name}, is due to finish in {month} {proj_year}.",
                f"Its budget is {budget} thousand euros.",
            ],
            [
                Fact(
                    [
                        f"Who leads the {proj} project?",
                        f"who is in charge of project {proj} according to {{doc}}",
                    ],
                    f"{proj} project",
                    lead_name,
                    f"The {proj} project is led by {lead_name}",
                ),
                Fact(
                    [f"When is the {proj} project due to finish?", f"{proj} project deadline? see {{doc}}"],
                    f"{proj} project finish",
                    f"{month} {proj_year}",
                    f"The {proj} project is due to finish in {month} {proj_year}",
                ),
            ],
        ),
        Unit(
            "Safety",
            [f"There were {incidents} workplace incidents in {year}, down from {before} the year before."],
            [
                Fact(
                    [
                        f"How many workplace incidents were there in {year}, according to {{doc}}?",
                        "how many safety incidents does {doc} report",
                    ],
                    "workplace incidents",
                    str(incidents),
                    f"There were {incidents} workplace incidents in {year}, down from {before} the year before",
                )
            ],
        ),
        Unit(
            "Outlook",
            [f"{org} plans to open a new site in {town2} in {open_year}."],
            [
                Fact(
                    [
                        "Where does {org} plan to open a new site?",
                        "according to {doc}, where is the new site going",
                    ],
                    "new site",
                    town2,
                    f"{org} plans to open a new site in {town2} in {open_year}",
                )
            ],
        ),
    ]
    rng.shuffle(units)
    units = units[: rng.randint(3, len(units))]
    for u in units:
        if rng.random() < 0.6:
            u.sentences.append(rng.choice(_FILLER))
    return units


def _slug(rng, org: str, what: str, year: int, ext: str) -> str:
    stem = rng.choice(
        [
            f"{org.split()[0].lower()}_{what}_{year}",
            f"{what}-{year}",
            f"{org} {what} {year}",
            what,
            f"{what}_final",
        ]
    )
    return f"{stem}.{ext}"


def write_report(rng, kind: str, org: str, year: int, units: list[Unit]) -> tuple[str, bytes]:
    from documents.extract.writers import docx_bytes, pdf_bytes, pptx_bytes

    title = f"{org} annual report {year}"
    if kind == "pdf":
        pages = []
        for u in units:
            body = "\n".join(textwrap.wrap(" ".join(u.sentences), 88))
            pages.append(f"{u.heading}\n\n{body}")
        return _slug(rng, org, "annual_report", year, "pdf"), pdf_bytes(pages)
    if kind == "docx":
        data = docx_bytes([(u.heading, u.sentences) for u in units])
        return _slug(rng, org, "report", year, "docx"), data
    if kind == "pptx":
        data = pptx_bytes([(u.heading, "\n".join(u.sentences)) for u in units])
        return _slug(rng, org, "slides", year, "pptx"), data
    if kind == "markdown":
        text = f"# {title}\n\n" + "\n\n".join(f"## {u.heading}\n\n" + " ".join(u.sentences) for u in units)
        return _slug(rng, org, "notes", year, "md"), text.encode()
    body = "".join(f"<h2>{u.heading}</h2><p>{' '.join(u.sentences)}</p>" for u in units)
    html = f"<html><head><title>{title}</title></head><body><h1>{title}</h1>{body}</body></html>"
    return _slug(rng, org, "report", year, "html"), html.encode()


DOC_WORDS = {
    "pdf": ["the report", "the pdf", "the PDF", "the report I uploaded", "that pdf"],
    "docx": ["the document", "the Word file", "the doc I attached", "the report"],
    "pptx": ["the slides", "the presentation", "the deck", "the slide deck I uploaded"],
    "markdown": ["the notes", "the markdown file", "my notes"],
    "html": ["the page", "the HTML file", "the saved page"],
    "xlsx": ["the spreadsheet", "the Excel file", "the xlsx", "the sheet I attached"],
    "csv": ["the CSV", "the csv file", "the table"],
}


def sales_rows(rng) -> list[list]:
    first = rng.randrange(12)
    months = [MONTHS[(first + i) % 12] for i in range(rng.randint(4, 8))]
    return [["Month", "Units", "Revenue (EUR)"]] + [
        [m, u, u * rng.choice([12, 15, 20, 25, 40])] for m, u in ((m, rng.randint(20, 900)) for m in months)
    ]


def staff_rows(rng) -> list[list]:
    rows, seen = [["Name", "Department", "Start year"]], set()
    while len(rows) < rng.randint(4, 7):
        person = _person(rng)
        if person not in seen:
            seen.add(person)
            rows.append([person, rng.choice(_DEPTS).capitalize(), rng.randint(2005, 2025)])
    return rows


# ---------------------------------------------------------------- traces


def _file_trace(question, thinking, run_tool, library) -> _Trace:
    t = _Trace(question, thinking, run_tool)
    with_files_prompt(t.messages, library)
    return t


def _example(kind: str, tag: str, t: _Trace, library: MemoryLibrary, value: str) -> Example:
    tools = [tool.schema() for tool in tools_for(ToolContext(files_library=library)).values()]
    return Example(kind, f"files:{tag}", t.messages, t.thinking, value, t.used, tools=tools)


def _part_of(mf: MemoryFile, value: str) -> FilePartText | None:
    want = " ".join(value.split())
    for p in mf.parts:
        if want in " ".join(p.text.split()):
            return p
    return None


def _ask(rng, fact: Fact, org: str, doc_word: str) -> str:
    return typo(rng, rng.choice(fact.questions).format(org=org, doc=doc_word))


def report_question(rng, thinking, python_tool, mf: MemoryFile, others: list[MemoryFile], units, org):
    """A fact from a report: search → read the page the hit names → answer citing it; or read it whole."""
    library = MemoryLibrary([mf, *others])
    run_tool = library_run_tool(library, python_tool)
    fact = rng.choice([f for u in units for f in u.facts])
    part = _part_of(mf, fact.value)
    if part is None:
        return None
    doc_word = rng.choice(DOC_WORDS[mf.kind]) if others or rng.random() < 0.8 else "the file"
    t = _file_trace(_ask(rng, fact, org, doc_word), thinking, run_tool, library)
    unit_word = {"pdf": "page", "pptx": "slide"}.get(mf.kind, "section")
    if rng.random() < 0.55 or mf.total > 4:
        args = {"query": fact.query}
        if others:
            args["name"] = mf.name
        hits = t.call(
            f"The answer should be in {mf.name}. Let me search it for '{fact.query}'.", "search_files", args
        )
        if part.citation not in hits:
            return None
        t.call(
            f"The search points to {part.citation}. Let me read that {unit_word}.",
            "read_file",
            {"name": mf.name, "start": part.number, "end": part.number},
        )
    else:
        out = t.call(f"{mf.name} is short; let me read it.", "read_file", {"name": mf.name})
        if part.citation not in out:
            return None
    t.answer(
        f"{part.citation} says: {' '.join(part.text.split())[:160]}",
        f"{fact.answer} {part.citation}.",
    )
    return _example("files", f"report:{mf.kind}", t, library, fact.value)


def sheet_question(rng, thinking, python_tool, mf: MemoryFile, others: list[MemoryFile], sheets: dict):
    """A value from a spreadsheet or CSV (read the sheet, answer citing it), or a total computed with python."""
    library = MemoryLibrary([mf, *others])
    run_tool = library_run_tool(library, python_tool)
    names = list(sheets)
    sheet = rng.choice(names)
    number = names.index(sheet) + 1
    rows = sheets[sheet]
    doc_word = rng.choice(DOC_WORDS[mf.kind])
    where = "" if len(names) == 1 or mf.kind == "csv" else f" (sheet {sheet})"
    row = rng.choice(rows[1:])
    col = rng.choice([1, 2])
    compute = rows[0][0] == "Month" and rng.random() < 0.35
    if compute:
        what = {1: "units sold", 2: "revenue"}[col]
        q = rng.choice(
            [
                f"What is the total {what} in {doc_word}{where}?",
                f"add up the {what} in {doc_word}",
                f"total {what} for all months? see {doc_word}",
            ]
        )
    elif rows[0][0] == "Month":
        month = row[0]
        q = rng.choice(
            [
                f"How many units were sold in {month}? it's in {doc_word}",
                f"units sold in {month} according to {doc_word}?",
            ]
            if col == 1
            else [
                f"What was the revenue in {month}, according to {doc_word}?",
                f"how much revenue in {month}? see {doc_word}",
            ]
        )
        cell = (
            f"In {month}, **{row[1]}** units were sold"
            if col == 1
            else f"The revenue in {month} was **{row[2]}** euros"
        )
    else:
        person = row[0]
        q = rng.choice(
            [
                f"Which department is {person} in, according to {doc_word}?",
                f"what department does {person} work in",
            ]
            if col == 1
            else [
                f"When did {person} start, according to {doc_word}?",
                f"{person}'s start year? check {doc_word}",
            ]
        )
        cell = f"{person} works in **{row[1]}**" if col == 1 else f"{person} started in **{row[2]}**"
    t = _file_trace(typo(rng, q), thinking, run_tool, library)
    read_args = {"name": mf.name} if mf.kind == "csv" else {"name": mf.name, "start": number, "end": number}
    out = t.call(f"The table is in {mf.name}{where}. Let me read it.", "read_file", read_args)
    part = next((p for p in mf.parts if (mf.kind == "csv" or p.number == number) and p.citation in out), None)
    if part is None:
        return None
    if compute:
        values = [r[col] for r in rows[1:]]
        code = f"values = {values}\nprint(sum(values))"
        printed = t.call(
            f"The {what} column holds {values}. Let me add them up.", "python", {"code": code}
        ).strip()
        if printed != str(sum(values)):
            return None
        unit = " euros" if col == 2 else ""
        t.answer(
            f"The sum is {printed}.",
            f"The total {what} is **{printed}{unit}** (the sum of the {len(values)} rows in {part.citation}).",
        )
        return _example("files", f"sheet:sum:{mf.kind}", t, library, printed)
    value = str(row[col])
    t.answer(
        f"In {part.citation}, the row for {row[0]} has {rows[0][col]} = {value}.", f"{cell} {part.citation}."
    )
    return _example("files", f"sheet:cell:{mf.kind}", t, library, value)


def list_question(rng, thinking, python_tool, files: list[MemoryFile]):
    library = MemoryLibrary(files)
    run_tool = library_run_tool(library, python_tool)
    q = rng.choice(
        [
            "What files did I attach?",
            "which files have i uploaded",
            "list my files",
            "What's in the files I sent you?",
            "how many pages does my file have",
        ]
    )
    t = _file_trace(typo(rng, q), thinking, run_tool, library)
    out = t.call("Let me list the attached files.", "list_files", {})
    lines = [line[2:] for line in out.splitlines() if line.startswith("- ")]
    if not lines:
        return None
    described = "\n".join(f"- {line.split(' — ')[0]}" for line in lines)
    t.answer(
        "Here is what list_files shows.",
        f"You attached {len(lines)} file{'s' if len(lines) > 1 else ''}:\n{described}",
    )
    return _example("files", "list", t, library, files[0].name)


def summary_question(rng, thinking, python_tool, mf: MemoryFile, org: str):
    library = MemoryLibrary([mf])
    run_tool = library_run_tool(library, python_tool)
    doc_word = rng.choice(DOC_WORDS[mf.kind])
    q = rng.choice(
        [
            f"Summarize {doc_word}.",
            f"can you give me a short summary of {doc_word}",
            f"What is {doc_word} about?",
            f"tl;dr of {doc_word}?",
        ]
    )
    t = _file_trace(typo(rng, q), thinking, run_tool, library)
    out = t.call(f"Let me read {mf.name}.", "read_file", {"name": mf.name})
    points = []
    for p in mf.parts:
        if p.citation not in out:
            return None
        lines = [ln for ln in p.text.split("\n\n") if ln.strip()]
        body = " ".join((lines[-1] if len(lines) > 1 else lines[0] if lines else "").split())
        first = re.split(r"(?<=\.)\s", body)[0] if body else ""
        if first:
            points.append(f"- {first} {p.citation}")
    if not points:
        return None
    t.answer(
        f"{mf.name} has {len(points)} parts; one line each.",
        f"{mf.name} is about {org}:\n" + "\n".join(points),
    )
    return _example("files", f"summary:{mf.kind}", t, library, org)


def file_traces(n: int, seed: int, python_tool: RunTool, thinking_off_frac: float = 0.25) -> list[Example]:
    """`n` traces over attached files in every format (PDF, Word, PowerPoint, Markdown, HTML, Excel, CSV)."""
    rng = random.Random(f"files:{seed}")
    out: list[Example] = []
    while len(out) < n:
        thinking = rng.random() >= thinking_off_frac
        org = f"{_name(rng, 2)} {rng.choice(_SUFFIX)}"
        year = rng.randint(2019, 2025)
        units = report_units(rng, org, year)
        report_kind = rng.choices(["pdf", "docx", "pptx", "markdown", "html"], [5, 2, 2, 1, 1])[0]
        name, data = write_report(rng, report_kind, org, year, units)
        report = extract(name, data)
        sheets = {"Sales": sales_rows(rng)} if rng.random() < 0.6 else {"Staff": staff_rows(rng)}
        if rng.random() < 0.5:
            sheets = {"Sales": sales_rows(rng), "Staff": staff_rows(rng)}
        sheet_kind = "xlsx" if rng.random() < 0.7 else "csv"
        sheet_file = _sheet_file(rng, sheet_kind, org, year, sheets)
        if sheet_kind == "csv":
            sheets = dict(list(sheets.items())[:1])
        two = rng.random() < 0.25
        r = rng.random()
        if r < 0.5:
            ex = report_question(rng, thinking, python_tool, report, [sheet_file] if two else [], units, org)
        elif r < 0.8:
            ex = sheet_question(rng, thinking, python_tool, sheet_file, [report] if two else [], sheets)
        elif r < 0.9:
            ex = summary_question(rng, thinking, python_tool, report, org)
        else:
            ex = list_question(rng, thinking, python_tool, [report, sheet_file] if two else [report])
        if ex is not None:
            out.append(ex)
    return out


def _sheet_file(rng, kind: str, org: str, year: int, sheets: dict) -> MemoryFile:
    from documents.extract.writers import xlsx_bytes

    if kind == "xlsx":
        return extract(_slug(rng, org, "figures", year, "xlsx"), xlsx_bytes(sheets))
    rows = next(iter(sheets.values()))
    text = "\n".join(
        ",".join(json.dumps(c) if isinstance(c, str) and "," in c else str(c) for c in r) for r in rows
    )
    return extract(_slug(rng, org, "table", year, "csv"), (text + "\n").encode())
