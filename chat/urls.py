"""Chat URL routes (pages of the chat UI); accounts and /healthz are routed in kimiweb/urls.py."""

from django.urls import path

from . import artifacts, attachments, views

app_name = "chat"

urlpatterns = [
    path("", views.index, name="index"),
    path("c/new", views.new_conversation, name="new"),
    path("c/<uuid:uuid>/", views.conversation, name="conversation"),
    path("c/<uuid:uuid>/rename", views.rename, name="rename"),
    path("c/<uuid:uuid>/pin", views.toggle_pin, name="pin"),
    path("c/<uuid:uuid>/archive", views.toggle_archive, name="archive"),
    path("c/<uuid:uuid>/delete", views.delete, name="delete"),
    path("c/<uuid:uuid>/stop", views.stop, name="stop"),
    path("c/<uuid:uuid>/share", views.share, name="share"),
    path("c/<uuid:uuid>/export.<str:fmt>", views.export, name="export"),
    path("t/<uuid:turn_uuid>/regenerate", views.regenerate, name="regenerate"),
    path("m/<uuid:message_uuid>/edit", views.edit_message, name="edit"),
    path("conversations/", views.conversation_list, name="list"),
    path("preferences", views.preferences, name="preferences"),
    path("s/<str:token>/", views.shared, name="shared"),
    path("artifact/runtime/", artifacts.runtime, name="artifact_runtime"),
    path("files/<uuid:uuid>", attachments.download, name="attachment"),
    path("s/<str:token>/files/<uuid:uuid>", attachments.shared_download, name="shared_attachment"),
]
