"""Fixtures for the document tests: real files of each format, written by the libraries that write
them, and uploads stored under a per-test MEDIA_ROOT."""

import pytest


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return tmp_path / "media"


@pytest.fixture
def owner(make_user):
    return make_user("alice")


@pytest.fixture
def stranger(make_user):
    return make_user("mallory")


@pytest.fixture
def conversation(owner):
    from chat.models import Conversation

    return Conversation.objects.create(owner=owner, title="docs")
