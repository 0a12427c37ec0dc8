"""PNG plots of a scenario result (matplotlib, Agg backend; imported only when plotting).

Bars are medians over repeats; error bars span the min and max repeat.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _median_and_err(summary: dict[str, Any], key: str) -> tuple[float, float, float]:
    stats = summary.get(key)
    if not stats:
        return 0.0, 0.0, 0.0
    return stats["median"], stats["median"] - stats["min"], stats["max"] - stats["median"]


def _subtitle(result: dict[str, Any]) -> str:
    machine = result.get("machine", {})
    cpus = machine.get("usable_cpus", "?")
    return f"{result.get('date', '')[:10]} · {machine.get('cpu_model', '?')} · {cpus} CPUs"


def plot_arm_throughput(
    result: dict[str, Any], path: Path, arms: Sequence[str] | None = None
) -> Path:
    plt = _pyplot()
    names = list(arms or result["arms"])
    values, low, high = zip(
        *(_median_and_err(result["arms"][n]["summary"], "output_throughput") for n in names),
        strict=True,
    )
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(names) + 2), 4.5))
    ax.bar(names, values, yerr=[low, high], capsize=4, color="#4c72b0")
    for index, value in enumerate(values):
        ax.annotate(
            f"{value:.1f}",
            (index, value),
            ha="center",
            va="bottom",
            fontsize=8,
            xytext=(0, 3),
            textcoords="offset points",
        )
    ax.set_ylabel("output tokens/s (median of repeats)")
    ax.set_title(f"{result['scenario']}: output throughput\n{_subtitle(result)}", fontsize=10)
    ax.tick_params(axis="x", labelrotation=30)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_arm_latency(
    result: dict[str, Any],
    path: Path,
    arms: Sequence[str] | None = None,
    metrics: Sequence[str] = ("ttft", "itl"),
) -> Path:
    plt = _pyplot()
    names = list(arms or result["arms"])
    pcts = ("median", "p90", "p99")
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(max(7.0, 1.6 * len(names) * len(metrics)), 4.5), squeeze=False
    )
    width = 0.8 / len(pcts)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for offset, pct in enumerate(pcts):
            key = f"{pct}_{metric}_ms"
            values, low, high = zip(
                *(_median_and_err(result["arms"][n]["summary"], key) for n in names), strict=True
            )
            xs = [i + (offset - 1) * width for i in range(len(names))]
            ax.bar(
                xs,
                values,
                width,
                yerr=[low, high],
                capsize=2,
                label="p50" if pct == "median" else pct,
            )
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=30, ha="right")
        ax.set_ylabel(f"{metric.upper()} (ms)")
        ax.set_title(metric.upper())
        ax.legend(fontsize=8)
    fig.suptitle(f"{result['scenario']}: latency percentiles\n{_subtitle(result)}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_sweep(result: dict[str, Any], path: Path) -> Path:
    """Throughput vs load, and TTFT/TPOT percentiles vs load, from the sweep's points."""
    plt = _pyplot()
    points = result["sweep"]["points"]
    xs = [point["x"] for point in points]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    left.plot(xs, [p["output_throughput"] for p in points], marker="o", label="output tok/s")
    left.plot(
        xs,
        [p["max_output_tokens_per_s"] for p in points],
        marker=".",
        linestyle=":",
        label="peak 1-s tok/s",
    )
    left.set_xscale("log", base=2)
    left.set_xlabel(result["sweep"]["x_label"])
    left.set_ylabel("tokens/s")
    left.set_title("throughput")
    left.legend(fontsize=8)
    for key, style in (
        ("median_ttft_ms", "-"),
        ("p99_ttft_ms", "--"),
        ("median_tpot_ms", "-"),
        ("p99_tpot_ms", "--"),
    ):
        right.plot(
            xs, [p[key] for p in points], marker="o", linestyle=style, label=key.replace("_ms", "")
        )
    right.set_xscale("log", base=2)
    right.set_yscale("log")
    right.set_xlabel(result["sweep"]["x_label"])
    right.set_ylabel("ms")
    right.set_title("latency")
    right.legend(fontsize=8)
    fig.suptitle(f"sweep ({result['sweep']['target']})\n{_subtitle(result)}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_cost(result: dict[str, Any], path: Path) -> Path:
    """$ per 1M tokens, self-hosted at each utilization vs each API, output and blended (log)."""
    plt = _pyplot()
    cost = result["cost"]
    labels, output, blended = [], [], []
    for row in cost["self_hosted"]:
        labels.append(f"self-hosted\n{cost['machine']['id']}\n@{row['utilization']:.0%}")
        output.append(row["output_per_1m"])
        blended.append(row["blended_per_1m"])
    for price in cost["api"]:
        labels.append(price["id"])
        output.append(price["output_per_1m"])
        blended.append(price["blended_per_1m"])
    xs = range(len(labels))
    fig, ax = plt.subplots(figsize=(max(7.0, 1.5 * len(labels)), 4.8))
    ax.bar([x - 0.2 for x in xs], output, 0.4, label="output tokens")
    ax.bar([x + 0.2 for x in xs], blended, 0.4, label="blended 3:1")
    for x, (o, b) in enumerate(zip(output, blended, strict=True)):
        ax.annotate(f"${o:.3g}", (x - 0.2, o), ha="center", va="bottom", fontsize=7)
        ax.annotate(f"${b:.3g}", (x + 0.2, b), ha="center", va="bottom", fontsize=7)
    ax.set_yscale("log")
    ax.set_xticks(list(xs))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel("$ per 1M tokens (log)")
    ax.set_title(
        f"cost per 1M tokens (model quality differs: see notes)\n{_subtitle(result)}", fontsize=10
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_cold_start(result: dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    rows = result["cold_start"]["summary"]
    names = list(rows)
    values = [rows[n]["median"] for n in names]
    low = [rows[n]["median"] - rows[n]["min"] for n in names]
    high = [rows[n]["max"] - rows[n]["median"] for n in names]
    fig, ax = plt.subplots(figsize=(max(7.0, 1.3 * len(names) + 2), 4.5))
    ax.bar(names, values, yerr=[low, high], capsize=4, color="#dd8452")
    for index, value in enumerate(values):
        ax.annotate(f"{value:.0f}", (index, value), ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("ms (median of repeats)")
    ax.set_title(f"adapter cold start\n{_subtitle(result)}", fontsize=10)
    ax.tick_params(axis="x", labelrotation=30)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
