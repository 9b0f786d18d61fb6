"""Runs one file's extraction for the worker: marks it reading, streams the child's parts into
FilePart rows with progress, and ends ready or failed with a message."""


def run_extraction(attachment_id: int) -> str:
    raise NotImplementedError
