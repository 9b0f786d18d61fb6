from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"
    verbose_name = "Chat"

    def ready(self):
        from . import sandbox_status  # noqa: F401  (connects the worker's start-up sandbox self-test)
