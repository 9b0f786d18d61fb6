"""Checks an upload before it is stored: a safe name, a supported extension, bytes that are what the
extension says, and (for the Office formats) a zip directory that does not expand past the limits."""

from __future__ import annotations

import codecs
import unicodedata
import zipfile
from dataclasses import dataclass
from typing import BinaryIO

MAX_NAME = 120

KINDS_BY_EXTENSION: dict[str, str] = {
    "pdf": "pdf",
    "docx": "docx",
    "pptx": "pptx",
    "xlsx": "xlsx",
    "xlsm": "xlsx",
    "csv": "csv",
    "tsv": "csv",
    "html": "html",
    "htm": "html",
    "xhtml": "html",
    "md": "markdown",
    "markdown": "markdown",
    "txt": "text",
    "text": "text",
    "log": "text",
    "rst": "text",
    **{
        ext: "code"
        for ext in (
            "py pyi js mjs cjs ts tsx jsx java kt kts scala c h cc cpp cxx hpp hh cs go rs rb php pl swift m "
            "mm r jl lua sh bash zsh fish ps1 sql json jsonl yaml yml toml ini cfg conf xml css scss less "
            "vue svelte dart ex exs erl hs ml clj el tex proto graphql gradle dockerfile makefile cmake"
        ).split()
    },
}

CONTENT_TYPES = {
    "pdf": "application/pdf",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "csv": "text/csv",
    "html": "text/html",
    "markdown": "text/markdown",
    "text": "text/plain",
    "code": "text/plain",
}

# The part of the zip that tells one Office format from another.
OFFICE_MARKERS = {"docx": "word/document.xml", "pptx": "ppt/presentation.xml", "xlsx": "xl/workbook.xml"}

LABELS = {
    "pdf": "PDF",
    "docx": "Word document",
    "pptx": "PowerPoint presentation",
    "xlsx": "Excel workbook",
    "csv": "CSV file",
    "html": "HTML page",
    "markdown": "Markdown file",
    "text": "text file",
    "code": "source file",
}


class Refused(Exception):
    """A file that is not taken, with a sentence its owner can act on."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class ZipLimits:
    max_unzipped_bytes: int
    max_ratio: int
    max_members: int = 10_000


def check_name(name: str) -> str:
    """The name as given when it is a plain file name; Refused for path tricks, control or invisible
    formatting characters (such as a right-to-left override that disguises an extension)."""
    if not name or not name.strip():
        raise Refused("The file has no name.")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp") for c in name):
        raise Refused(
            "The file name contains control or invisible characters; rename the file and try again."
        )
    if "/" in name or "\\" in name or name.strip() in (".", "..") or name.startswith("."):
        raise Refused("The file name looks like a path; rename the file and try again.")
    if any(c in '"<>|:*?' for c in name):
        raise Refused('The file name contains one of the characters " < > | : * ? — rename the file.')
    name = name.strip()
    if len(name) > MAX_NAME:
        raise Refused(f"The file name is longer than {MAX_NAME} characters; rename the file.")
    return name


def kind_for(name: str) -> str:
    lower = name.lower()
    ext = lower.rsplit(".", 1)[-1] if "." in lower else lower
    kind = KINDS_BY_EXTENSION.get(ext)
    if kind is None:
        raise Refused(
            f"Files of type .{ext} are not supported. Upload PDF, Word (.docx), PowerPoint (.pptx), "
            "Excel (.xlsx), CSV, HTML, Markdown, text or source code."
            if "." in lower
            else "The file has no extension, so its type is unknown; add one (.pdf, .docx, .txt, ...)."
        )
    return kind


def check_zip(fileobj: BinaryIO, limits: ZipLimits, what: str = "file") -> zipfile.ZipFile:
    """Opens an Office file's zip and checks its directory before anything is decompressed: member
    count, total declared size and each member's compression ratio. Returns the open ZipFile."""
    try:
        archive = zipfile.ZipFile(fileobj)
        infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise Refused(f"The {what} is damaged: its zip container cannot be read.") from exc
    if len(infos) > limits.max_members:
        raise Refused(f"The {what} holds {len(infos)} parts, more than {limits.max_members}; it is not read.")
    total = 0
    for info in infos:
        total += info.file_size
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > 1 << 20 and ratio > limits.max_ratio:
            raise Refused(
                f"The {what} is refused: a part of it expands {ratio:.0f} times (a zip bomb?); "
                f"the limit is {limits.max_ratio}."
            )
    if total > limits.max_unzipped_bytes:
        raise Refused(
            f"The {what} is refused: it expands to {total // (1 << 20)} MB, more than "
            f"{limits.max_unzipped_bytes // (1 << 20)} MB."
        )
    return archive


def _looks_like_text(fileobj: BinaryIO) -> bool:
    """UTF-8 (or UTF-16 with a byte-order mark) without NUL bytes, read in chunks to the end."""
    fileobj.seek(0)
    head = fileobj.read(4)
    fileobj.seek(0)
    encoding = "utf-16" if head[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE) else "utf-8-sig"
    decoder = codecs.getincrementaldecoder(encoding)()
    try:
        while chunk := fileobj.read(1 << 20):
            text = decoder.decode(chunk)
            if "\x00" in text:
                return False
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    finally:
        fileobj.seek(0)
    return True


def check_content(fileobj: BinaryIO, name: str, kind: str, zip_limits: ZipLimits) -> None:
    """Refused unless the bytes are what the extension says (sniffed, not trusted)."""
    fileobj.seek(0)
    head = fileobj.read(2048)
    fileobj.seek(0)
    ext = name.rsplit(".", 1)[-1]
    mismatch = Refused(f'"{name}" is not a {LABELS[kind]}: its contents do not match the .{ext} extension.')
    if kind == "pdf":
        if b"%PDF-" not in head[:1024]:
            raise mismatch
        return
    if kind in OFFICE_MARKERS:
        if not head.startswith(b"PK\x03\x04"):
            raise mismatch
        archive = check_zip(fileobj, zip_limits, LABELS[kind])
        names = set(archive.namelist())
        fileobj.seek(0)
        if OFFICE_MARKERS[kind] not in names:
            raise mismatch
        return
    if head.startswith((b"%PDF-", b"PK\x03\x04")) or not _looks_like_text(fileobj):
        raise mismatch


def decode_text(data: bytes) -> str:
    if data[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        return data.decode("utf-16")
    return data.decode("utf-8-sig", errors="replace")
