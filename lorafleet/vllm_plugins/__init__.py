"""Code that runs inside vLLM's processes, not the gateway's: vLLM general plugins.

vLLM loads every `vllm.general_plugins` entry point (pyproject.toml) in each of its processes
(API server, EngineCore, workers). Modules here are imported there, so they depend on vLLM and
torch at most and never on `lorafleet.server` (whose gateway may run without either); the
gateway imports them only for their switches (`cpu_lora_ops.enabled()`), which need neither.
"""
