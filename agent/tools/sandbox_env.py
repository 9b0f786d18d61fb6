"""The sandbox's own Python: a copy of this interpreter and its standard library under `var/sandbox-env/`,
with numpy, pandas, matplotlib, scipy and sympy installed into it, mounted read-only inside bubblewrap.

A copy rather than a venv: the sandbox runs as an unprivileged uid that may not traverse the worker's
interpreter directory (pyenv under /root, say), and a copy depends on nothing outside `var/`. For the same
reason a root worker whose checkout other users cannot enter (a clone inside a 0700 directory) keeps the
sandbox's files under `/var/lib/kimiweb/` instead, root-owned and readable by all (`shared_place`).
`python -m agent.tools.sandbox_env build` is idempotent: with the stamp present it returns at once.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

PACKAGES = ["numpy>=1.26", "pandas>=2.1", "matplotlib>=3.8", "scipy>=1.11", "sympy>=1.12"]
VERSION = f"python{sys.version_info.major}.{sys.version_info.minor}"
# Left out of the copy: tests, GUI toolkits and the base interpreter's own installed packages.
SKIPPED = {"test", "site-packages", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3"}
STAMP_NAME = ".built"
SHARED_ROOT = Path("/var/lib/kimiweb")


def shared_place(path: Path, name: str) -> Path:
    """`path`, or `SHARED_ROOT / name` for a root worker when other users cannot reach `path`: the sandbox
    runs under pool uids that must be able to read its files."""
    parents = [parent for parent in path.resolve().parents if parent.exists()]
    if os.geteuid() != 0 or all(parent.stat().st_mode & 0o001 for parent in parents):
        return path
    SHARED_ROOT.mkdir(parents=True, exist_ok=True)
    SHARED_ROOT.chmod(0o755)
    return SHARED_ROOT / name


def default_root() -> Path:
    configured = os.environ.get("KIMIWEB_SANDBOX_ENV")
    if configured:
        return Path(configured)
    digest = hashlib.sha256(stamp_text().encode()).hexdigest()[:12]
    local, name = Path(__file__).resolve().parents[2] / "var" / "sandbox-env", f"sandbox-env-{digest}"
    place = shared_place(local, name)
    if place == local and os.geteuid() == 0 and not is_built(local) and is_built(SHARED_ROOT / name):
        # Built under the shared root while the checkout was closed to other users; its folders have
        # been opened since (the embedded Postgres opens its data folder's ancestors): keep using it.
        return SHARED_ROOT / name
    return place


def python_path(root: Path) -> Path:
    return root / "bin" / VERSION


def site_packages(root: Path) -> Path:
    return root / "lib" / VERSION / "site-packages"


def stamp_text() -> str:
    return "\n".join([sys.version, *PACKAGES])


def is_built(root: Path) -> bool:
    stamp = root / STAMP_NAME
    return stamp.is_file() and stamp.read_text() == stamp_text() and python_path(root).is_file()


def build(root: Path | None = None, quiet: bool = False) -> Path:
    """Build the environment at `root` unless it is already built for this interpreter and package list."""
    root = root or default_root()
    if is_built(root):
        return root
    say = (lambda *a: None) if quiet else (lambda *a: print("sandbox-env:", *a, flush=True))
    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    base = Path(sys.base_prefix)
    stdlib = Path(
        sysconfig.get_paths(vars={"installed_base": sys.base_prefix, "base": sys.base_prefix})["stdlib"]
    )
    say(f"copying the interpreter from {base} into {root}")
    (partial / "bin").mkdir(parents=True)
    shutil.copy2(os.path.realpath(sys._base_executable), python_path(partial))
    libdir = Path(sysconfig.get_config_var("LIBDIR") or base / "lib")
    (partial / "lib").mkdir(exist_ok=True)
    ldlibrary = sysconfig.get_config_var("INSTSONAME") or ""
    if sysconfig.get_config_var("Py_ENABLE_SHARED") and (libdir / ldlibrary).exists():
        shutil.copy2(libdir / ldlibrary, partial / "lib" / ldlibrary)
    shutil.copytree(
        stdlib,
        partial / "lib" / VERSION,
        symlinks=True,
        ignore=lambda d, names: [n for n in names if Path(d) == stdlib and n in SKIPPED],
    )
    site_packages(partial).mkdir()
    say("installing", " ".join(PACKAGES), "(a minute or two the first time)")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--only-binary=:all:",
            "--target",
            str(site_packages(partial)),
            *PACKAGES,
        ],
        check=True,
    )
    # Matplotlib's font cache, built once here so a figure's first import in the sandbox is fast.
    mplconfig = partial / "mplconfig"
    mplconfig.mkdir()
    subprocess.run(
        [
            str(python_path(partial)),
            "-I",
            "-c",
            "import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot",
        ],
        env={
            "MPLCONFIGDIR": str(mplconfig),
            "LD_LIBRARY_PATH": str(partial / "lib"),
            "PATH": "/usr/bin:/bin",
        },
        check=True,
    )
    for path in [partial, *partial.rglob("*")]:  # readable by the sandbox's unprivileged uids
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | 0o444 | (0o111 if path.is_dir() else 0))
    (partial / STAMP_NAME).write_text(stamp_text())
    shutil.rmtree(root, ignore_errors=True)
    partial.rename(root)
    say("ready")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["build", "path"])
    parser.add_argument("--root", type=Path, default=None)
    args = parser.parse_args()
    if args.command == "build":
        build(args.root)
    else:
        print(args.root or default_root())


if __name__ == "__main__":
    main()
