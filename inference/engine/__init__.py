"""The CPU engine: loader, tokenizer, scheduler with continuous batching, prefix cache, sampler."""
