"""The HTTP API: OpenAI-compatible chat completions over the CPU engine, chat templates, parsers."""
