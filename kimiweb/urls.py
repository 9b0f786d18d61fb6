"""URL routes: the admin console, accounts, health, the files pages and the chat app."""

from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView

from chat import accounts, health

urlpatterns = [
    # The corpus's documents moved from the chat app to the corpus app; old links still arrive.
    re_path(
        r"^admin/chat/document/(?P<rest>.*)$",
        RedirectView.as_view(url="/admin/corpus/document/%(rest)s", permanent=True, query_string=True),
    ),
    path("admin/", admin.site.urls),
    path("accounts/", include(accounts.urlpatterns)),
    path("healthz", health.healthz, name="healthz"),
    path("", include("documents.urls")),
    path("", include("chat.urls")),
]
