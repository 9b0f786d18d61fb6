"""Prometheus metrics of the engine and the API (exposed at /metrics)."""

from prometheus_client import Counter, Gauge, Histogram

TIME_TO_FIRST_TOKEN = Histogram(
    "kimiweb_time_to_first_token_seconds",
    "Time from request arrival to its first generated token",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64),
)
GENERATED_TOKENS = Counter("kimiweb_generated_tokens_total", "Tokens generated")
PROMPT_TOKENS = Counter("kimiweb_prompt_tokens_total", "Prompt tokens received")
DECODE_TOKENS_PER_SECOND = Gauge(
    "kimiweb_decode_tokens_per_second", "Aggregate decode tokens/s of the last step"
)
RUNNING = Gauge("kimiweb_running_requests", "Requests in the running batch")
WAITING = Gauge("kimiweb_waiting_requests", "Requests waiting for cache memory or a batch slot")
PREFIX_CACHE_HIT_RATE = Gauge(
    "kimiweb_prefix_cache_hit_rate", "Share of prompt tokens served by the prefix cache"
)
KV_CACHE_USAGE = Gauge("kimiweb_kv_cache_usage", "Share of KV cache blocks in use")
REQUESTS = Counter("kimiweb_requests_total", "Chat completion requests by outcome", ["outcome"])
