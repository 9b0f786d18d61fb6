"""The text side of uploaded files. The bytes are `chat.Attachment(origin=upload)` rows; these rows hold
what extraction read from them (one FileText per file, its FileParts by anchor) and which conversations
a file is attached to."""

from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVector, SearchVectorField
from django.db import models


class FileText(models.Model):
    """Where a file's extraction stands and what it produced."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        READING = "reading"
        READY = "ready"
        FAILED = "failed"

    class Kind(models.TextChoices):
        PDF = "pdf"
        DOCX = "docx"
        PPTX = "pptx"
        XLSX = "xlsx"
        CSV = "csv"
        HTML = "html"
        MARKDOWN = "markdown"
        TEXT = "text"
        CODE = "code"

    attachment = models.OneToOneField("chat.Attachment", on_delete=models.CASCADE, related_name="text")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    # A sentence for the file's owner ("The PDF is encrypted ..."), never a traceback.
    error = models.CharField(max_length=500, blank=True, default="")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    parts_done = models.PositiveIntegerField(default=0)
    parts_total = models.PositiveIntegerField(default=0)
    chars = models.PositiveBigIntegerField(default=0)
    extractor = models.CharField(max_length=100, blank=True, default="")  # library name and version
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"{self.attachment_id}: {self.status}"


class FilePart(models.Model):
    """One anchored piece of a file's text: a page, a slide, a sheet, a heading section or a line
    range. Long anchors are cut into several parts of at most ~4000 characters with the same anchor."""

    class Anchor(models.TextChoices):
        PAGE = "page"
        SLIDE = "slide"
        SHEET = "sheet"
        SECTION = "section"
        LINES = "lines"

    attachment = models.ForeignKey("chat.Attachment", on_delete=models.CASCADE, related_name="parts")
    index = models.PositiveIntegerField()  # 0-based order of the part within its file
    anchor_kind = models.CharField(max_length=16, choices=Anchor.choices)
    number = models.PositiveIntegerField()  # 1-based page, slide, sheet, section or first line
    label = models.CharField(max_length=300)  # "p. 3", "slide 2", "sheet Sales", "## Heading", "lines 1-80"
    text = models.TextField(blank=True, default="")
    search_vector = models.GeneratedField(
        expression=SearchVector("label", weight="A", config="english")
        + SearchVector("text", weight="B", config="english"),
        output_field=SearchVectorField(),
        db_persist=True,
    )

    class Meta:
        ordering = ["attachment", "index"]
        constraints = [models.UniqueConstraint(fields=["attachment", "index"], name="filepart_unique_index")]
        indexes = [
            GinIndex(fields=["search_vector"], name="filepart_fts_idx"),
            models.Index(fields=["attachment", "number"], name="filepart_number_idx"),
        ]

    def __str__(self):
        return f"{self.attachment_id} {self.label}"


class ConversationFile(models.Model):
    """A file attached to a conversation (by an upload into it, or from the owner's library);
    `turn` is the turn whose message carried it, when there was one."""

    conversation = models.ForeignKey("chat.Conversation", on_delete=models.CASCADE, related_name="file_links")
    attachment = models.ForeignKey(
        "chat.Attachment", on_delete=models.CASCADE, related_name="conversation_links"
    )
    turn = models.ForeignKey(
        "chat.Turn", on_delete=models.SET_NULL, null=True, blank=True, related_name="file_links"
    )
    added = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["added", "id"]
        constraints = [
            models.UniqueConstraint(fields=["conversation", "attachment"], name="conversationfile_unique")
        ]

    def __str__(self):
        return f"{self.conversation_id} <- {self.attachment_id}"
