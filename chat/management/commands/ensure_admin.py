"""`manage.py ensure_admin`: create the first superuser once, so a fresh install has a way into the admin console.

Credentials come from ADMIN_USERNAME / ADMIN_PASSWORD / ADMIN_EMAIL; without ADMIN_PASSWORD a strong
password is generated, printed once, and kept in var/admin-credentials.txt (mode 0600). When any
superuser exists, nothing changes.
"""

import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction

CREDENTIALS_FILE = Path(settings.BASE_DIR) / "var" / "admin-credentials.txt"
ADVISORY_LOCK_KEY = 0x6B696D69  # "kimi"


class Command(BaseCommand):
    help = "Create the first superuser (from ADMIN_USERNAME/ADMIN_PASSWORD/ADMIN_EMAIL, or generated) once."

    def add_arguments(self, parser):
        parser.add_argument(
            "--credentials-file",
            type=Path,
            default=CREDENTIALS_FILE,
            help="where a generated password is kept (default: var/admin-credentials.txt)",
        )

    def handle(self, *args, credentials_file: Path, **options):
        User = get_user_model()
        with transaction.atomic():
            # Two set-ups running at once must not both create "the first" admin.
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ADVISORY_LOCK_KEY])
            existing = User.objects.filter(is_superuser=True).order_by("pk").first()
            if existing is not None:
                self.stdout.write(f"Admin account exists ({existing.get_username()}); nothing to do.")
                return
            username = os.environ.get("ADMIN_USERNAME") or "admin"
            email = os.environ.get("ADMIN_EMAIL") or ""
            password = os.environ.get("ADMIN_PASSWORD") or ""
            generated = not password
            if generated:
                password = secrets.token_urlsafe(18)
            if User.objects.filter(username=username).exists():
                # Never take over (or promote) an ordinary account that happens to have the name.
                raise CommandError(
                    f"An ordinary account named {username!r} exists; set ADMIN_USERNAME to another name."
                )
            User.objects.create_superuser(username=username, email=email, password=password)

        if generated:
            credentials_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(credentials_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(f"username={username}\npassword={password}\n")
            os.chmod(credentials_file, 0o600)
            self.stdout.write(
                self.style.SUCCESS(
                    f"Created admin account\n  username: {username}\n  password: {password}\n"
                    f"(shown once; also saved to {credentials_file}, mode 0600)"
                )
            )
        else:
            self.stdout.write(
                self.style.SUCCESS(f"Created admin account {username!r} from ADMIN_* settings.")
            )
