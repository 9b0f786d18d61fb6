"""Fixtures for kimi-mini's tests: the checkpoint built from the committed artifact (once per session)."""

import pytest


@pytest.fixture(scope="session")
def built_kimi_mini(tmp_path_factory):
    from kimi_mini.build import build
    from kimi_mini.train import ARTIFACT_FILE, ARTIFACTS

    artifact = ARTIFACTS / ARTIFACT_FILE
    if not artifact.exists():
        pytest.skip("no committed kimi-mini artifact yet (run `python -m kimi_mini train`)")
    out = tmp_path_factory.mktemp("kimi-mini-build") / "kimi-mini"
    digest = build(out, artifact)
    return out, digest
