"""kimi-mini: SmolLM2-135M-Instruct turned into a small MoE with INT4 routed experts, trained to think and call
tools in Kimi K2's format. `python -m kimi_mini train|eval|build`; see README.md beside this file."""
