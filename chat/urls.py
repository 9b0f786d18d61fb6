"""Chat URL routes (pages of the chat UI)."""

urlpatterns = []
