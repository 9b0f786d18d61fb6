"""Documents users upload into conversations: their extracted text by page, slide, sheet or section,
full-text search over it, and the agent's read access to it (documents.library)."""
