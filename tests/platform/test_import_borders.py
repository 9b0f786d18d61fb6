"""The package borders in pyproject.toml's import-linter contracts hold, and a crossing breaks them."""

import subprocess
import sys
import tomllib
from pathlib import Path

from django.conf import settings

LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", *args],
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(cwd)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_repository_keeps_every_contract():
    done = lint_imports(Path(settings.BASE_DIR))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_a_planted_crossing_of_each_border_breaks_its_contract(tmp_path):
    config = tomllib.loads((Path(settings.BASE_DIR) / "pyproject.toml").read_text())["tool"]["importlinter"]
    for package in config["root_packages"]:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    files = {
        "agent/loop.py": "import django\n",
        "agent/corpus.py": "",
        "agent/tools/__init__.py": "",
        "agent/tools/base.py": "",
        "agent/tools/browse.py": "",
        "corpus/search.py": "from agent import corpus\n",
        "documents/extract/__init__.py": "",
        "corpus/services.py": "from agent.tools import base, browse\n",
        "inference/server.py": "from agent import loop\n",
        "chat/views.py": "import console\n",
        "django/__init__.py": "",
        "pyproject.toml": (Path(settings.BASE_DIR) / "pyproject.toml").read_text(),
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)

    done = lint_imports(tmp_path)

    assert done.returncode == 1
    assert "agent is not allowed to import django" in done.stdout
    assert "inference is not allowed to import agent" in done.stdout
    assert "chat is not allowed to import console" in done.stdout
