"""README.md documents every environment variable settings.py reads, and the two commands."""

import re
from pathlib import Path

from django.conf import settings

BASE_DIR = Path(settings.BASE_DIR)


def settings_variables() -> set[str]:
    source = (BASE_DIR / "kimiweb" / "settings.py").read_text()
    return set(re.findall(r'\benv(?:\.\w+)?\(\s*"([A-Z][A-Z0-9_]*)"', source))


def test_every_environment_variable_of_the_settings_is_in_the_configuration_table():
    readme = (BASE_DIR / "README.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \|", readme, re.M))
    variables = settings_variables()
    assert {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "LLM_BASE_URL"} <= variables  # the parser works
    assert variables - documented == set()


def test_the_readme_names_the_two_commands_and_the_admin_console():
    readme = (BASE_DIR / "README.md").read_text()
    assert "make run" in readme and "make test" in readme
    assert "/admin/" in readme
