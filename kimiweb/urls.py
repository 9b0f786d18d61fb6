"""URL routes: the admin console, accounts, health, and the chat app."""

from django.contrib import admin
from django.urls import include, path

from chat import accounts, health

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include(accounts.urlpatterns)),
    path("healthz", health.healthz, name="healthz"),
    path("", include("chat.urls")),
]
