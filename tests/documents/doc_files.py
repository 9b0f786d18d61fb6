"""Real files of each format, written by the libraries that write them."""

import io

from django.core.files.uploadedfile import SimpleUploadedFile

from documents.extract.writers import docx_bytes, pdf_bytes, pptx_bytes, xlsx_bytes

__all__ = [
    "docx_bytes",
    "encrypted_pdf_bytes",
    "long_pdf_bytes",
    "pdf_bytes",
    "pptx_bytes",
    "upload",
    "xlsx_bytes",
]


def upload(name: str, data: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data)


def encrypted_pdf_bytes(text: str = "secret", password: str = "hunter2") -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    for page in PdfReader(io.BytesIO(pdf_bytes([text]))).pages:
        writer.add_page(page)
    writer.encrypt(user_password=password, owner_password=password or "owner-secret", algorithm="AES-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def long_pdf_bytes(pages: int) -> bytes:
    return pdf_bytes(
        [f"Page {n} of the long report.\nThe code word of page {n} is word{n}x." for n in range(1, pages + 1)]
    )
