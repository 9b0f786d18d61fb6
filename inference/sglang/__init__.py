"""SGLang integration: a plugin that runs SGLang's compressed-tensors W4A16 MoE layers on our Triton kernel."""
