"""The one Celery app. Workers run `celery -A kimiweb worker -Q agent`; one beat runs the sweeps."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kimiweb.settings")

app = Celery("kimiweb")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["agent"])

# A worker that dies while others keep running leaves its turn's lease to lapse; this sweep (run by
# exactly one beat process) hands such turns to a live worker, which resumes them from the last
# persisted step. Workers also sweep once when they start.
app.conf.beat_schedule = {
    "resume-orphaned-turns": {
        "task": "agent.tasks.resume_orphaned_turns",
        "schedule": float(os.environ.get("AGENT_LEASE_SECONDS", 60)),
    }
}
