"""llama-server's command line, as the tests start it and as the Helm chart's pools run it."""

from __future__ import annotations

from pathlib import Path

from lorafleet.adapters.training.llama_server import LlamaServerOptions, llama_server_command


def test_the_context_is_per_slot_and_the_defaults_listen_on_loopback_only() -> None:
    command = llama_server_command(
        Path("/bin/llama-server"), Path("m.gguf"), "court", 8081, LlamaServerOptions(2048, 4)
    )
    assert command == [
        "/bin/llama-server", "--model", "m.gguf", "--alias", "court", "--host", "127.0.0.1",
        "--port", "8081", "--ctx-size", "8192", "--parallel", "4", "--jinja", "--no-webui",
    ]  # fmt: skip


def test_metrics_gpu_layers_threads_and_host_are_opt_in() -> None:
    options = LlamaServerOptions(1024, 2, threads=3, metrics=True, gpu_layers=999)
    command = llama_server_command(Path("s"), Path("m.gguf"), "q", 8000, options, host="0.0.0.0")
    assert command[command.index("--host") + 1] == "0.0.0.0"
    assert command[-5:] == ["--threads", "3", "--metrics", "--n-gpu-layers", "999"]
    assert command[command.index("--ctx-size") + 1] == "2048"
