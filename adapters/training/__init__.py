"""The sidecar trainer: LoRA/QLoRA fine-tuning that feeds adapters to the gateway.

Modules, by feature:

- `config`: `TrainConfig`, YAML + flags, unknown keys rejected.
- `datasets`: JSONL loading and validation (chat `messages` or `prompt`/`completion`).
- `hardware`: precision, gradient checkpointing and QLoRA decided from the device.
- `train`: the TRL `SFTTrainer` + PEFT run, validation against serving limits, the manifest.
- `publish`: `POST /v1/adapters` on a running gateway.
- `merge`: `merge_and_unload` into a full-precision base.
- `evaluation`, `metrics`: the extraction task through any OpenAI-compatible endpoint.
- `court_task`, `synthetic`: the synthetic court-decision extraction task.
- `cli`: `lorafleet train | merge | eval`.

Only `cli` is imported by `lorafleet --help`; torch, transformers, TRL and PEFT are imported
inside the functions that need them.
"""
