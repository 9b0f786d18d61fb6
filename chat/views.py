"""Chat views."""
