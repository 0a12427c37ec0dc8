"""LoRA adapters through the gateway on a real vLLM engine, checked against transformers + PEFT.

Each adapter is random (non-zero B), so its greedy output differs from the base model's; the
reference output comes from PEFT applied to the same base weights in float32.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import threading
import time
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from lorafleet.adapters.base_models import fetch_model, model_info
from tests.adapter_factory import make_lora_dir
from tests.integration.conftest import MODEL, Server

pytestmark = pytest.mark.integration

PROMPT = [{"role": "user", "content": "Name a colour."}]
MAX_TOKENS = 8


@cache
def base_dir() -> Path:
    return fetch_model(None, progress=False)


def make_adapter(gateway: Server, name: str, seed: int) -> Path:
    assert gateway.adapter_root is not None
    return make_lora_dir(
        gateway.adapter_root / name, model_info(base_dir()), rank=8, seed=seed, scale=0.08,
        targets=("q_proj", "k_proj", "v_proj", "o_proj"),
    )  # fmt: skip


def register(gateway: Server, name: str, path: Path) -> dict[str, Any]:
    response = httpx.post(
        f"{gateway.url}/v1/adapters", json={"name": name, "source": str(path)}, timeout=60
    )
    assert response.status_code == 201, response.text
    record: dict[str, Any] = response.json()
    return record


def greedy(gateway: Server, model: str) -> str:
    reply = gateway.openai(timeout=300).chat.completions.create(
        model=model,
        messages=PROMPT,
        temperature=0,
        max_tokens=MAX_TOKENS,  # type: ignore[arg-type]
    )
    return reply.choices[0].message.content or ""


def peft_greedy(adapter_dir: Path | None) -> str:
    """The reference: transformers (+ PEFT) greedy decoding of the same chat prompt."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_dir())
    model: Any = AutoModelForCausalLM.from_pretrained(base_dir(), dtype=torch.float32)
    if adapter_dir is not None:
        model = PeftModel.from_pretrained(model, adapter_dir)
    ids = tokenizer.apply_chat_template(
        PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=MAX_TOKENS, do_sample=False)
    text: str = tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    return text


@pytest.fixture(scope="module")
def adapters(gateway: Server) -> dict[str, Path]:
    paths = {f"lora{i}": make_adapter(gateway, f"lora{i}", seed=100 + i) for i in range(8)}
    for name, path in paths.items():
        register(gateway, name, path)
    return paths


def test_adapter_output_matches_peft_and_differs_from_base(
    gateway: Server, adapters: dict[str, Path]
) -> None:
    started = time.perf_counter()
    served = greedy(gateway, "lora0")
    cold = time.perf_counter() - started
    started = time.perf_counter()
    assert greedy(gateway, "lora0") == served
    warm = time.perf_counter() - started
    print(f"\n[lora0 first request {cold * 1000:.0f} ms, warm {warm * 1000:.0f} ms]")
    assert served == peft_greedy(adapters["lora0"])
    assert served != greedy(gateway, MODEL)
    assert greedy(gateway, MODEL) == peft_greedy(None)


def test_eight_adapters_mixed_with_base_traffic(gateway: Server, adapters: dict[str, Path]) -> None:
    models = [MODEL, *adapters]
    expected = {model: greedy(gateway, model) for model in models}
    assert len(set(expected.values())) >= 6  # the adapters really differ
    jobs = [models[i % len(models)] for i in range(45)]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda m: (m, greedy(gateway, m)), jobs))
    mixed_up = [(m, text) for m, text in results if text != expected[m]]
    assert not mixed_up, f"alone: {expected}"


def test_alias_swap_under_load_fails_nothing(gateway: Server, adapters: dict[str, Path]) -> None:
    v1 = make_adapter(gateway, "swap-v1", seed=7)
    v2 = make_adapter(gateway, "swap-v2", seed=8)
    register(gateway, "swap", v1)
    before = greedy(gateway, "swap")
    after_expected = greedy(gateway, "lora0")  # warm the engine; unrelated output
    assert after_expected
    stop = threading.Event()
    results: list[tuple[str, str]] = []
    errors: list[Exception] = []

    def client() -> None:
        sdk = gateway.openai(timeout=300)
        while not stop.is_set():
            try:
                reply = sdk.chat.completions.create(
                    model="swap",
                    messages=PROMPT,
                    temperature=0,
                    max_tokens=MAX_TOKENS,  # type: ignore[arg-type]
                )
                results.append((reply.model, reply.choices[0].message.content or ""))
            except Exception as exc:  # every failure counts
                errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(6)]
    for thread in threads:
        thread.start()
    time.sleep(3)
    second = register(gateway, "swap", v2)
    assert second["version"] == 2
    deadline = time.monotonic() + 300  # keep the load on until version 2 has answered a few
    while sum(model == "swap@2" for model, _ in results) < 3 and time.monotonic() < deadline:
        time.sleep(0.5)
    stop.set()
    for thread in threads:
        thread.join(120)
    assert not errors
    after = greedy(gateway, "swap")
    assert after != before
    by_version = {"swap@1": before, "swap@2": after}
    assert {model for model, _ in results} == {"swap@1", "swap@2"}
    assert all(text == by_version[model] for model, text in results)  # never mixed


def test_rollback_serves_the_old_version_again(gateway: Server) -> None:
    response = httpx.post(f"{gateway.url}/v1/adapters/swap/rollback", json={}, timeout=30)
    assert response.json()["current_version"] == 1
    reply = gateway.openai().chat.completions.create(
        model="swap",
        messages=PROMPT,
        temperature=0,
        max_tokens=MAX_TOKENS,  # type: ignore[arg-type]
    )
    assert reply.model == "swap@1"


def test_engine_restart_is_reconciled(gateway: Server, adapters: dict[str, Path]) -> None:
    assert gateway.engine_url is not None
    expected = greedy(gateway, "lora1")
    port = int(gateway.engine_url.rsplit(":", 1)[1])
    pid = next(
        c.pid for c in psutil.net_connections("tcp")
        if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN and c.pid
    )  # fmt: skip
    os.killpg(os.getpgid(pid), signal.SIGKILL)  # the engine dies with everything it held
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            models = httpx.get(f"{gateway.engine_url}/v1/models", timeout=2).json()["data"]
            if "lora1@1" in {m["id"] for m in models}:
                break  # the supervisor restarted it and the reconcile loop reloaded lora1
        except httpx.HTTPError:
            pass
        time.sleep(1)
    else:
        pytest.fail(f"adapter never came back after the engine restart:\n{gateway.log_tail()}")
    assert greedy(gateway, "lora1") == expected


def test_peft_written_adapter_is_served_within_seconds_of_the_cli(gateway: Server) -> None:
    """An adapter saved by PEFT itself, registered with `lorafleet adapters add`."""
    import subprocess
    import sys

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    assert gateway.adapter_root is not None
    target = gateway.adapter_root / "peft-made"
    torch.manual_seed(0)
    base: Any = AutoModelForCausalLM.from_pretrained(base_dir(), dtype=torch.float32)
    config = LoraConfig(
        r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    get_peft_model(base, config).save_pretrained(target)
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "lorafleet.cli", "adapters", "--url", gateway.url, "add",
         "peft-made", str(target)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    served = greedy(gateway, "peft-made")
    elapsed = time.perf_counter() - started
    print(f"\n[registered and first answer in {elapsed:.1f}s]")
    assert elapsed < 30  # seconds, not a restart (CPU decode of 8 tokens included)
    assert served == peft_greedy(target)


def test_trained_adapter_is_served(gateway: Server) -> None:
    """The trainer's output (a 2-step TRL + PEFT run) is accepted and served by the engine."""
    from lorafleet.adapters.training.smoke import train_smoke_adapter

    assert gateway.adapter_root is not None
    output = gateway.adapter_root / "trained"
    train_smoke_adapter(output, steps=2)
    record = register(gateway, "trained", output)
    assert record["manifest"] is not None  # the trainer's manifest travels with the version
    reply = gateway.openai(timeout=300).chat.completions.create(
        model="trained",
        messages=PROMPT,
        temperature=0,
        max_tokens=MAX_TOKENS,  # type: ignore[arg-type]
    )
    assert reply.model == "trained@1"
    assert reply.choices[0].message.content
