from django.apps import AppConfig
from django.db.models.signals import post_delete


class DocumentsConfig(AppConfig):
    name = "documents"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from .signals import delete_bytes

        post_delete.connect(
            delete_bytes,
            sender=self.apps.get_model("chat", "Attachment"),
            dispatch_uid="documents.delete_bytes",
        )
