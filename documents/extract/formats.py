"""Each format's text as anchors (a page, a slide, a sheet, a heading section, a range of lines), read
with the format's own well-kept library. No Django: this runs in the extraction child process.

`read(path, kind, limits)` returns (anchor count, iterator of Anchor); the count is known before the
first anchor is read, so progress can say N of M. Problems the owner can fix raise `Refused`.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version

from .sniff import Refused, ZipLimits, check_zip, decode_text

MAX_PART_CHARS = 4000
LINES_PER_PART = 120


@dataclass(frozen=True)
class Limits:
    max_pages: int = 2000  # pages, slides, sections or line ranges
    max_sheets: int = 50
    max_sheet_rows: int = 5000
    max_chars: int = 20_000_000
    max_unzipped_bytes: int = 300 << 20
    max_zip_ratio: int = 200

    @property
    def zip(self) -> ZipLimits:
        return ZipLimits(max_unzipped_bytes=self.max_unzipped_bytes, max_ratio=self.max_zip_ratio)


@dataclass(frozen=True)
class Anchor:
    kind: str  # page | slide | sheet | section | lines
    number: int  # 1-based
    label: str
    text: str


@dataclass(frozen=True)
class Part:
    kind: str
    number: int
    label: str
    text: str


def clean(text: str) -> str:
    """Text Postgres can store (no NUL) with runs of blank lines collapsed."""
    text = text.replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n")
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def chunks(text: str, limit: int = MAX_PART_CHARS) -> list[str]:
    """Splits text into pieces of at most `limit` characters at paragraph, line or word breaks."""
    out: list[str] = []
    while len(text) > limit:
        window = text[:limit]
        cut = max(window.rfind("\n\n"), 0)
        if cut < limit // 2:
            cut = window.rfind("\n")
        if cut < limit // 2:
            cut = window.rfind(" ")
        if cut < limit // 2:
            cut = limit
        out.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    if text or not out:
        out.append(text)
    return out


def parts_of(anchor: Anchor) -> list[Part]:
    return [Part(anchor.kind, anchor.number, anchor.label, piece) for piece in chunks(anchor.text)]


def extractor_name(kind: str) -> str:
    dist = {
        "pdf": "pypdf",
        "docx": "python-docx",
        "pptx": "python-pptx",
        "xlsx": "openpyxl",
        "html": "trafilatura",
    }.get(kind)
    if dist is None:
        return "kimiweb text reader"
    return f"{dist} {version(dist)}"


def _too_many(what: str, count: int, limit: int) -> Refused:
    return Refused(f"The file has {count} {what}; at most {limit} are read. Split it and upload the parts.")


# -- PDF ------------------------------------------------------------------------------------------


def read_pdf(path: str, limits: Limits) -> tuple[int, Iterator[Anchor]]:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(path)
        encrypted = reader.is_encrypted
        if encrypted:
            try:
                opened = reader.decrypt("")  # an owner password only: readable without one
            except Exception:
                opened = 0
            if not opened:
                raise Refused(
                    "The PDF is encrypted with a password; remove the password (print it to a new PDF) "
                    "and upload it again."
                )
        count = len(reader.pages)
    except Refused:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError, OSError) as exc:
        raise Refused("The PDF is damaged or not a valid PDF; it could not be read.") from exc
    if count == 0:
        raise Refused("The PDF has no pages.")
    if count > limits.max_pages:
        raise _too_many("pages", count, limits.max_pages)

    def pages() -> Iterator[Anchor]:
        for i in range(count):
            try:
                text = reader.pages[i].extract_text() or ""
            except Exception:  # one damaged page does not lose the others
                text = ""
            yield Anchor("page", i + 1, f"p. {i + 1}", clean(text))

    return count, pages()


# -- Word -----------------------------------------------------------------------------------------


def _heading_levels(document) -> dict[str, int]:
    """Style id → heading level (Title counts as 1), read once: resolving each paragraph's style
    through python-docx costs a lookup in the styles part per paragraph."""
    levels: dict[str, int] = {}
    for style in document.styles:
        name = getattr(style, "name", "") or ""
        match = re.match(r"Heading (\d)$", name)
        if name == "Title":
            levels[style.style_id] = 1
        elif match:
            levels[style.style_id] = int(match.group(1))
    return levels


def _table_text(table) -> str:
    rows = []
    for row in table.rows:
        cells = []
        for cell in row.cells:
            value = " ".join(cell.text.split())
            if not cells or cells[-1] != value:  # merged cells repeat
                cells.append(value)
        rows.append("\t".join(cells))
    return "\n".join(rows)


def read_docx(path: str, limits: Limits) -> tuple[int, Iterator[Anchor]]:
    import docx
    from docx.table import Table

    with open(path, "rb") as f:
        check_zip(f, limits.zip, "Word document")
    try:
        document = docx.Document(path)
        levels = _heading_levels(document)
        sections: list[tuple[str, list[str]]] = [("start", [])]
        for block in document.iter_inner_content():
            if isinstance(block, Table):
                sections[-1][1].append(_table_text(block))
                continue
            level = levels.get(block._p.style or "", 0)
            text = block.text.strip()
            if level and text:
                sections.append(("#" * level + " " + " ".join(text.split()), [text]))
            elif text:
                sections[-1][1].append(text)
    except Exception as exc:
        raise Refused("The Word document is damaged; it could not be read.") from exc
    if not sections[0][1]:
        sections.pop(0)
    if len(sections) > limits.max_pages:
        raise _too_many("sections", len(sections), limits.max_pages)
    anchors = [
        Anchor("section", i + 1, label, clean("\n\n".join(body))) for i, (label, body) in enumerate(sections)
    ]
    return len(anchors), iter(anchors)


# -- PowerPoint -----------------------------------------------------------------------------------


def _shape_texts(shapes) -> Iterator[str]:
    for shape in shapes:
        if getattr(shape, "shape_type", None) == 6 or hasattr(shape, "shapes"):  # a group
            yield from _shape_texts(shape.shapes)
            continue
        if getattr(shape, "has_text_frame", False) and shape.text_frame.text.strip():
            yield shape.text_frame.text.strip()
        if getattr(shape, "has_table", False):
            yield "\n".join(
                "\t".join(" ".join(cell.text.split()) for cell in row.cells) for row in shape.table.rows
            )


def read_pptx(path: str, limits: Limits) -> tuple[int, Iterator[Anchor]]:
    from pptx import Presentation

    with open(path, "rb") as f:
        check_zip(f, limits.zip, "PowerPoint presentation")
    try:
        presentation = Presentation(path)
        slides = list(presentation.slides)
    except Exception as exc:
        raise Refused("The PowerPoint presentation is damaged; it could not be read.") from exc
    if len(slides) > limits.max_pages:
        raise _too_many("slides", len(slides), limits.max_pages)

    def read() -> Iterator[Anchor]:
        for i, slide in enumerate(slides):
            try:
                texts = list(_shape_texts(slide.shapes))
                if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
                    notes = slide.notes_slide.notes_text_frame.text.strip()
                    if notes:
                        texts.append("Notes: " + notes)
            except Exception:
                texts = []
            yield Anchor("slide", i + 1, f"slide {i + 1}", clean("\n\n".join(texts)))

    return len(slides), read()


# -- Excel and CSV --------------------------------------------------------------------------------


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return " ".join(str(value).split())


def _row_text(values) -> str:
    cells = [_cell(v) for v in values]
    while cells and not cells[-1]:
        cells.pop()
    return "\t".join(cells)


def read_xlsx(path: str, limits: Limits) -> tuple[int, Iterator[Anchor]]:
    import openpyxl

    with open(path, "rb") as f:
        check_zip(f, limits.zip, "Excel workbook")
    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
        sheets = workbook.worksheets
    except Exception as exc:
        raise Refused("The Excel workbook is damaged; it could not be read.") from exc
    if len(sheets) > limits.max_sheets:
        raise _too_many("sheets", len(sheets), limits.max_sheets)

    def read() -> Iterator[Anchor]:
        for i, sheet in enumerate(sheets):
            lines: list[str] = []
            more = False
            try:
                for n, row in enumerate(sheet.iter_rows(values_only=True)):
                    if n >= limits.max_sheet_rows:
                        more = True
                        break
                    text = _row_text(row)
                    if text:
                        lines.append(text)
            except Exception:
                lines.append("[the rest of this sheet could not be read]")
            if more:
                lines.append(f"[only the first {limits.max_sheet_rows} rows of this sheet were read]")
            yield Anchor("sheet", i + 1, f"sheet {sheet.title}", clean("\n".join(lines)))
        workbook.close()

    return len(sheets), read()


def read_csv(path: str, limits: Limits) -> tuple[int, Iterator[Anchor]]:
    with open(path, "rb") as f:
        text = decode_text(f.read())
    sample = text[:20000]
    delimiter = "\t" if path.lower().endswith(".tsv") else ","
    try:
        delimiter = csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:
        pass
    rows: list[str] = []
    more = False
    try:
        for n, row in enumerate(csv.reader(io.StringIO(text), delimiter=delimiter)):
            if n >= limits.max_sheet_rows:
                more = True
                break
            rows.append(_row_text(row))
    except csv.Error as exc:
        raise Refused(f"The CSV file could not be read: {exc}.") from exc
    header, body = (rows[0], rows[1:]) if rows else ("", [])
    anchors: list[Anchor] = []
    start = 0
    while start < len(body) or not anchors:
        size = len(header)
        end = start
        while end < len(body) and (end == start or size + len(body[end]) + 1 <= MAX_PART_CHARS):
            size += len(body[end]) + 1
            end += 1
        first, last = start + 2, end + 1  # file row numbers; row 1 is the header
        label = f"rows {first}-{last}" if end > start else "row 1"
        anchors.append(
            Anchor("lines", first if end > start else 1, label, clean("\n".join([header, *body[start:end]])))
        )
        start = end
        if end >= len(body):
            break
    if more:
        last = anchors[-1]
        anchors[-1] = Anchor(
            last.kind,
            last.number,
            last.label,
            last.text + f"\n[only the first {limits.max_sheet_rows} rows were read]",
        )
    if len(anchors) > limits.max_pages:
        raise _too_many("row ranges", len(anchors), limits.max_pages)
    return len(anchors), iter(anchors)


# -- HTML, Markdown, text and code ----------------------------------------------------------------

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


def markdown_sections(text: str) -> list[Anchor]:
    """Sections by ATX heading, outside fenced code; what comes before the first heading is "start"."""
    sections: list[tuple[str, list[str]]] = [("start", [])]
    fenced = False
    for line in text.split("\n"):
        if _FENCE.match(line):
            fenced = not fenced
        match = None if fenced else _HEADING.match(line)
        if match:
            sections.append((f"{match.group(1)} {match.group(2).strip()}", [line]))
        else:
            sections[-1][1].append(line)
    if not "\n".join(sections[0][1]).strip():
        sections.pop(0)
    return [
        Anchor("section", i + 1, label[:300], clean("\n".join(body)))
        for i, (label, body) in enumerate(sections)
    ]


def line_ranges(text: str) -> list[Anchor]:
    """Consecutive lines, at most LINES_PER_PART and about MAX_PART_CHARS per range, labelled by line."""
    lines = text.replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    anchors: list[Anchor] = []
    start = 0
    while start < len(lines):
        end, size = start, 0
        while (
            end < len(lines)
            and end - start < LINES_PER_PART
            and (end == start or size + len(lines[end]) < MAX_PART_CHARS)
        ):
            size += len(lines[end]) + 1
            end += 1
        body = "\n".join(lines[start:end])
        label = f"lines {start + 1}-{end}" if end - start > 1 else f"line {start + 1}"
        anchors.append(Anchor("lines", start + 1, label, body))
        start = end
    return anchors


def _read_text(path: str) -> str:
    with open(path, "rb") as f:
        return decode_text(f.read())


def _bounded(anchors: list[Anchor], limits: Limits, what: str) -> tuple[int, Iterator[Anchor]]:
    if len(anchors) > limits.max_pages:
        raise _too_many(what, len(anchors), limits.max_pages)
    return len(anchors), iter(anchors)


def read_markdown(path: str, limits: Limits) -> tuple[int, Iterator[Anchor]]:
    return _bounded(markdown_sections(_read_text(path)), limits, "sections")


def read_html(path: str, limits: Limits) -> tuple[int, Iterator[Anchor]]:
    from agent.tools.browse import html_to_markdown

    logging.getLogger("trafilatura").setLevel(logging.CRITICAL)
    return _bounded(markdown_sections(html_to_markdown(_read_text(path))), limits, "sections")


def read_lines(path: str, limits: Limits) -> tuple[int, Iterator[Anchor]]:
    return _bounded(line_ranges(_read_text(path)), limits, "line ranges")


READERS = {
    "pdf": read_pdf,
    "docx": read_docx,
    "pptx": read_pptx,
    "xlsx": read_xlsx,
    "csv": read_csv,
    "html": read_html,
    "markdown": read_markdown,
    "text": read_lines,
    "code": read_lines,
}


def read(path: str, kind: str, limits: Limits) -> tuple[int, Iterator[Anchor]]:
    return READERS[kind](path, limits)
