"""The one Celery app. Workers run `celery -A kimiweb worker -Q agent`."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kimiweb.settings")

app = Celery("kimiweb")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["agent"])
