from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    """The admin console: registers the chat's and the corpus's models with Django's admin site."""

    name = "console"
    verbose_name = "Console"
