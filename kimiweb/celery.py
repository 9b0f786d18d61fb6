"""The one Celery app. Workers run `celery -A kimiweb worker -Q agent`; one beat runs the sweeps.

Its configuration is the `CELERY_*` settings (kimiweb/settings.py), including the namespace prefix
of every broker key and the beat schedule; tasks are the `tasks` modules of the installed apps
(`chat/tasks.py` runs turns).
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kimiweb.settings")

app = Celery("kimiweb")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
