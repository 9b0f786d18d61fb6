"""The local search corpus: documents the offline `web_search` backend finds with Postgres full-text
search and the `browse` tool opens without the network."""

from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVector, SearchVectorField
from django.db import models


class Document(models.Model):
    """One page of the corpus: imported from a file, a folder, a URL or the admin's upload form."""

    url = models.URLField(max_length=1000, unique=True)
    title = models.CharField(max_length=500, blank=True, default="")
    text = models.TextField(blank=True, default="")
    source = models.CharField(max_length=200, blank=True, default="", db_index=True)
    search_vector = models.GeneratedField(
        expression=SearchVector("title", weight="A", config="english")
        + SearchVector("text", weight="B", config="english"),
        output_field=SearchVectorField(),
        db_persist=True,
    )
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        # The table the chat app created; the model moved apps, its rows stayed where they were.
        db_table = "chat_document"
        indexes = [GinIndex(fields=["search_vector"], name="document_fts_idx")]

    def __str__(self):
        return self.title or self.url
