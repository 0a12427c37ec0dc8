"""Memory bandwidth of this machine, for the single-stream decode roofline.

    python -m lorafleet.benchmarks.membw            # prints GB/s (read + write traffic)

A decode step of a dense model reads every weight once, so one stream cannot beat
bandwidth / weight bytes tokens per second. Measured as the best of a few large tensor copies
with all threads (torch if installed, else single-threaded numpy), counting bytes read + written.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

SIZE_BYTES = 512 * 1024**2


def _best_seconds(copy: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        copy()
        best = min(best, time.perf_counter() - started)
    return best


def measure_in_process(repeats: int = 5) -> tuple[float, str]:
    """(GB/s, how): best of `repeats` copies of a 512 MiB buffer."""
    try:
        import torch
    except ImportError:
        import numpy

        source_np = numpy.ones(SIZE_BYTES // 4, dtype=numpy.float32)
        target_np = numpy.empty_like(source_np)
        seconds = _best_seconds(lambda: numpy.copyto(target_np, source_np), repeats)
        return 2 * SIZE_BYTES / seconds / 1e9, "numpy copyto, 1 thread"
    source = torch.ones(SIZE_BYTES // 4, dtype=torch.float32)
    target = torch.empty_like(source)
    seconds = _best_seconds(lambda: target.copy_(source), repeats)
    return 2 * SIZE_BYTES / seconds / 1e9, f"torch copy_, {torch.get_num_threads()} threads"


def measure() -> dict[str, object]:
    """Run the measurement in a child process (keeps torch out of the load generator)."""
    done = subprocess.run(
        [sys.executable, "-m", "lorafleet.benchmarks.membw"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        return {"error": done.stderr[-500:]}
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def weight_bytes(model_dir: Path) -> int:
    return sum(path.stat().st_size for path in model_dir.glob("*.safetensors"))


if __name__ == "__main__":
    gbs, how = measure_in_process()
    print(json.dumps({"gb_per_s": gbs, "method": how}))
