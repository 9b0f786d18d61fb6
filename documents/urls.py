"""File routes: the library, upload, a file's text view and status line, delete; the text view of a
shared conversation's file. A file's bytes are served by chat (`chat:attachment`, `/files/<uuid>`)."""

from django.urls import path

from . import views

app_name = "documents"

urlpatterns = [
    path("files/", views.library, name="library"),
    path("files/upload", views.upload, name="upload"),
    path("files/picker", views.picker, name="picker"),
    path("files/<uuid:uuid>/text", views.text, name="text"),
    path("files/<uuid:uuid>/status", views.status, name="status"),
    path("files/<uuid:uuid>/delete", views.delete, name="delete"),
    path("s/<str:token>/files/<uuid:uuid>/text", views.shared_text, name="shared_text"),
]
