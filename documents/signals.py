"""An attachment's bytes go with its row: deleting a file, a conversation or a user removes them from
storage once the deleting transaction commits."""

from django.db import transaction


def delete_bytes(sender, instance, **kwargs):
    stored = instance.file
    if not stored or not stored.name:
        return
    storage, name = stored.storage, stored.name
    transaction.on_commit(lambda: storage.delete(name))
