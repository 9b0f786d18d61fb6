"""The agent: the think → tool → observe loop (`loop`), its model client, context budget and tools,
and the worker glue that runs a turn in Celery (`tasks`), records it (`store`) and streams it
(`publisher`). Stop a turn with `agent.control.request_cancel(turn_uuid)`."""
