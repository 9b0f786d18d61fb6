"""Real files of each format, written by the libraries that write them."""

import io

from django.core.files.uploadedfile import SimpleUploadedFile


def upload(name: str, data: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data)


def pdf_bytes(pages: list[str]) -> bytes:
    """A real PDF with one text page per item (reportlab)."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    out = io.BytesIO()
    c = canvas.Canvas(out, pagesize=A4)
    for text in pages:
        y = 800
        for line in text.split("\n"):
            c.drawString(60, y, line)
            y -= 14
        c.showPage()
    c.save()
    return out.getvalue()


def docx_bytes(sections: list[tuple[str, list[str]]]) -> bytes:
    import docx

    d = docx.Document()
    for heading, paragraphs in sections:
        d.add_heading(heading, level=1)
        for p in paragraphs:
            d.add_paragraph(p)
    out = io.BytesIO()
    d.save(out)
    return out.getvalue()


def pptx_bytes(slides: list[tuple[str, str]]) -> bytes:
    from pptx import Presentation

    prs = Presentation()
    for title, body in slides:
        slide = prs.slides.add_slide(prs.slide_layouts[1])
        slide.shapes.title.text = title
        slide.placeholders[1].text = body
    out = io.BytesIO()
    prs.save(out)
    return out.getvalue()


def xlsx_bytes(sheets: dict[str, list[list]]) -> bytes:
    import openpyxl

    wb = openpyxl.Workbook()
    wb.remove(wb.active)
    for name, rows in sheets.items():
        ws = wb.create_sheet(name)
        for row in rows:
            ws.append(row)
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


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
