"""The source of truth: conversations, their messages, and each agent turn's steps and tool calls.

Token deltas live only in Redis streams; these rows hold checkpointed text, so nothing the user saw
is lost if Redis goes away. Public ids are UUIDs; integer keys never leave the server.
"""

import uuid

from django.conf import settings
from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVector
from django.db import models


class Conversation(models.Model):
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations"
    )
    title = models.CharField(max_length=200, blank=True, default="")
    pinned = models.BooleanField(default=False)
    archived = models.BooleanField(default=False)
    # A read-only share link; None when not shared. Revoking sets it back to None.
    share_token = models.CharField(max_length=64, unique=True, null=True, blank=True)
    # What a share link reveals beyond the questions and answers (the owner chooses when sharing):
    # the reasoning, tool calls and their outputs; and downloads of the conversation's files.
    share_details = models.BooleanField(default=False)
    share_files = models.BooleanField(default=False)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-pinned", "-updated"]
        indexes = [models.Index(fields=["owner", "archived", "-pinned", "-updated"], name="conv_sidebar_idx")]

    def __str__(self):
        return self.title or f"Conversation {self.uuid}"


class Turn(models.Model):
    """One agent run answering one user message: queued → running → done | failed | cancelled."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"
        CANCELLED = "cancelled"

    FINISHED = (Status.DONE, Status.FAILED, Status.CANCELLED)

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="turns")
    user_message = models.ForeignKey("Message", on_delete=models.CASCADE, related_name="turns")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    thinking = models.BooleanField(default=True)
    model = models.CharField(max_length=200, blank=True, default="")
    steps = models.PositiveIntegerField(default=0)
    tokens_in = models.PositiveBigIntegerField(default=0)
    tokens_out = models.PositiveBigIntegerField(default=0)
    error = models.TextField(blank=True, default="")
    # The lease: which worker runs the turn, until when. A redelivered task that finds a live lease
    # held by someone else leaves the turn alone; an expired lease means the holder died.
    lease_owner = models.CharField(max_length=200, blank=True, default="")
    lease_expires = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True, db_index=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created"]
        indexes = [models.Index(fields=["conversation", "created"], name="turn_conv_idx")]

    def __str__(self):
        return f"Turn {self.uuid} ({self.status})"

    @property
    def is_finished(self):
        return self.status in self.FINISHED


class Message(models.Model):
    """A user message, or the final assistant message of a turn (its content and reasoning)."""

    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField(blank=True, default="")
    reasoning = models.TextField(blank=True, default="")
    # For an assistant message: the turn that produced it.
    turn = models.OneToOneField(Turn, on_delete=models.CASCADE, null=True, blank=True, related_name="answer")
    # Edit-and-resend and regenerate keep the older branch: a message replaced by a newer version
    # points at it and drops out of the visible thread, but stays reachable.
    superseded_by = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="earlier_versions"
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created", "id"]
        indexes = [
            models.Index(fields=["conversation", "created"], name="msg_conv_idx"),
            GinIndex(SearchVector("content", config="english"), name="msg_content_fts"),
        ]

    def __str__(self):
        return f"{self.role}: {self.content[:60]}"


class Step(models.Model):
    """One model call within a turn: its reasoning, content and why it ended."""

    turn = models.ForeignKey(Turn, on_delete=models.CASCADE, related_name="step_rows")
    index = models.PositiveIntegerField()
    reasoning = models.TextField(blank=True, default="")
    content = models.TextField(blank=True, default="")
    finish_reason = models.CharField(max_length=32, blank=True, default="")
    usage = models.JSONField(default=dict, blank=True)
    started = models.DateTimeField(auto_now_add=True)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["turn", "index"]
        constraints = [models.UniqueConstraint(fields=["turn", "index"], name="step_turn_index_uniq")]

    def __str__(self):
        return f"Step {self.index} of {self.turn_id}"


class ToolCall(models.Model):
    class Status(models.TextChoices):
        RUNNING = "running"
        DONE = "done"
        ERROR = "error"
        CANCELLED = "cancelled"

    step = models.ForeignKey(Step, on_delete=models.CASCADE, related_name="tool_calls")
    index = models.PositiveIntegerField(default=0)
    call_id = models.CharField(max_length=200)
    name = models.CharField(max_length=100, db_index=True)
    # The raw argument text as the model wrote it (it may not be valid JSON).
    arguments = models.TextField(blank=True, default="")
    result = models.TextField(blank=True, default="")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    error = models.TextField(blank=True, default="")
    started = models.DateTimeField(auto_now_add=True)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["step", "index"]

    def __str__(self):
        return f"{self.name}({self.call_id})"


def attachment_path(instance, filename):
    """Bytes live under the owner's id and the attachment's uuid: names never collide or escape."""
    return f"attachments/{instance.owner_id}/{instance.uuid}/{filename}"


class Attachment(models.Model):
    """A file that belongs to one user's conversation: written by a tool (a figure, a CSV the python
    tool saved) or uploaded by the owner. Its bytes are on the default storage; only its owner (and,
    when the owner chose, a share link) may read them."""

    class Origin(models.TextChoices):
        TOOL = "tool"
        UPLOAD = "upload"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="attachments")
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, null=True, blank=True, related_name="attachments"
    )
    turn = models.ForeignKey(
        Turn, on_delete=models.CASCADE, null=True, blank=True, related_name="attachments"
    )
    tool_call = models.ForeignKey(
        "ToolCall", on_delete=models.SET_NULL, null=True, blank=True, related_name="attachments"
    )
    origin = models.CharField(max_length=16, choices=Origin.choices, default=Origin.TOOL)
    name = models.CharField(max_length=255)
    content_type = models.CharField(max_length=255, default="application/octet-stream")
    size = models.PositiveBigIntegerField(default=0)
    file = models.FileField(upload_to=attachment_path, max_length=500)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created", "id"]
        indexes = [models.Index(fields=["owner", "created"], name="attachment_owner_idx")]

    def __str__(self):
        return self.name

    @property
    def is_image(self) -> bool:
        return self.content_type in ("image/png", "image/jpeg", "image/gif", "image/webp")


class UserPreference(models.Model):
    """Per-user choices the UI remembers: the Long thinking toggle and the theme."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="preference")
    long_thinking = models.BooleanField(default=True)
    theme = models.CharField(max_length=8, default="system")  # system | light | dark
