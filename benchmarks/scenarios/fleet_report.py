"""The `fleet` scenario's failover results for people: headline rows, the Markdown section of
summary.md, and the throughput-over-time plot (all from the JSON summary, nothing measured)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from lorafleet.benchmarks.failover import OUTCOMES
from lorafleet.benchmarks.scenarios.arms import headline_row


def failover_headline(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Headline rows of a failover summary (rows whose event was never seen are left out)."""
    fails, line = summary["failures"], summary["timeline"]
    c = summary["concurrency"]
    workload = (
        f"{summary['workload']}, {summary['duration_s']:.0f} s, SIGKILL of one of 2 engines at "
        f"{line['kill']:.0f} s, lorafleet serve --replicas 2"
    )
    rows = [
        headline_row(
            f"failover (c={c}): streams on the killed replica that failed",
            fails["streams_on_killed_replica_failed"],
            "requests",
            workload,
            bar="all end with an error event",
            meets_bar=fails["streams_on_killed_replica_truncated"] == 0,
        ),
        headline_row(
            f"failover (c={c}): requests not yet streaming that failed",
            fails["not_yet_streaming_failed"],
            "requests",
            workload,
            bar="== 0 (retried on the other replica)",
            meets_bar=fails["not_yet_streaming_failed"] == 0,
        ),
    ]
    for key, measure in (
        ("time_to_eject_s", "kill -> replica ejected by the gateway"),
        ("time_to_healthy_s", "kill -> restarted replica marked healthy"),
        ("time_to_serving_s", "kill -> restarted replica serving requests"),
    ):
        if line[key] is not None:
            rows.append(headline_row(f"failover: {measure}", line[key], "s", workload))
    return rows


def failover_section(summary: dict[str, Any]) -> list[str]:
    """Markdown lines: the timeline, requests by phase, failures by kind."""
    line, fails = summary["timeline"], summary["failures"]

    def at(key: str) -> str:
        return "not seen" if line[key] is None else f"{line[key]:.2f}"

    def since(key: str) -> str:
        return "-" if line[key] is None else f"+{line[key]:.2f}"

    lines = [
        f"Gateway {summary['gateway']}, engines {', '.join(summary['engines'])}; killed "
        f"{summary['victim']} (pid {summary['killed'].get('pid')}, its whole process group). "
        f"Closed loop c={summary['concurrency']} ({summary['workload']}) for "
        f"{summary['duration_s']:.1f} s; times from the start of the load, polled every "
        f"{summary['plan']['poll_interval_s']:g} s.",
        "",
        "| event | at (s) | after the kill (s) |",
        "|---|---|---|",
        f"| SIGKILL of the engine's process group | {line['kill']:.2f} | - |",
        f"| gateway marks it unhealthy (engine_ready 0) | {at('ejected')} | "
        f"{since('time_to_eject_s')} |",
        f"| restarted engine answers again | {at('engine_up')} | {since('time_to_engine_up_s')} |",
        f"| gateway marks it healthy (engine_ready 1) | {at('healthy')} | "
        f"{since('time_to_healthy_s')} |",
        f"| restarted engine finished a request | {at('serving')} | {since('time_to_serving_s')} |",
        "",
        "| phase (by end time) | from (s) | to (s) | completed | failed | completed/s |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in summary["phases"].items():
        rate = "-" if row["completed_per_s"] is None else f"{row['completed_per_s']:.2f}"
        lines.append(
            f"| {name} | {row['from_s']:.1f} | {row['to_s']:.1f} | {row['completed']} | "
            f"{row['failed']} | {rate} |"
        )
    lines += [
        "",
        "| failed requests | " + " | ".join(OUTCOMES[1:]) + " |",
        "|---|---|---|---|",
    ]
    for when, counts in fails["by_timing_and_outcome"].items():
        lines.append(f"| {when} | " + " | ".join(str(counts[o]) for o in OUTCOMES[1:]) + " |")
    lines += [
        "",
        f"In flight at the kill: {fails['in_flight_at_kill']} requests, "
        f"{fails['in_flight_at_kill_ok']} of them completed (those on the surviving replica). "
        f"Streams on the killed replica that failed: {fails['streams_on_killed_replica_failed']} "
        f"({fails['streams_on_killed_replica_error_event']} ended with an error event, "
        f"{fails['streams_on_killed_replica_truncated']} were cut off without one). Requests not "
        f"yet streaming that failed: {fails['not_yet_streaming_failed']}.",
    ]
    if fails["errors"]:
        lines += ["", "Errors seen:", "", *[f"- `{error}`" for error in fails["errors"][:10]]]
    return lines


_EVENTS = (
    ("kill", "SIGKILL", "#c44e52", "-"),
    ("ejected", "ejected", "#dd8452", "--"),
    ("engine_up", "engine up", "#8c8c8c", ":"),
    ("healthy", "healthy again", "#55a868", "--"),
    ("serving", "serving again", "#55a868", "-"),
)


def _histogram(times: list[float], bins: int) -> list[float]:
    counts = [0.0] * bins
    for moment in times:
        counts[min(max(int(moment), 0), bins - 1)] += 1
    return counts


def _rates(counts: list[float], duration: float) -> list[float]:
    """Per-second rates from 1-s bin counts; the last bin is only as wide as what is left."""
    rates = [float(count) for count in counts]
    tail = duration - (len(rates) - 1)
    if rates and 0 < tail < 1:
        rates[-1] /= tail
    return rates


def plot_failover(result: dict[str, Any], path: Path) -> Path:
    """Completions per second (1-s bins) with the kill, the recovery events and the failures
    marked; below, requests/s each engine reported finishing (its own counter)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = result["failover"]
    line = data["timeline"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True)
    ok = _rates(data["completions_per_s"], data["duration_s"])
    failed = _rates(_histogram(data["failure_end_times_s"], len(ok)), data["duration_s"])
    edges = list(range(len(ok) + 1))
    top.stairs(ok, edges, color="#4c72b0", linewidth=1.5, label="completed req/s")
    if any(failed):
        top.stairs(failed, edges, color="#c44e52", linewidth=1.5, label="failed req/s")
    for url, served in data["served_per_s"].items():
        rates = [math.nan if value is None else value for value in served]
        tag = " (killed)" if url == data["victim"] else ""
        bottom.stairs(_rates(rates, data["duration_s"]), edges[: len(rates) + 1], label=url + tag)
    for ax in (top, bottom):
        for key, label, color, style in _EVENTS:
            if line.get(key) is not None:
                ax.axvline(
                    line[key], color=color, linestyle=style, label=label if ax is top else None
                )
        ax.legend(fontsize=8, loc="lower left")
    top.set_ylabel("requests/s (client, 1-s bins)")
    bottom.set_ylabel("requests/s finished by each\nengine (its own counter)")
    bottom.set_xlabel("seconds from the start of the load")
    machine = result.get("machine", {})
    fig.suptitle(
        f"fleet failover: c={data['concurrency']}, 2 replicas, one killed\n"
        f"{result.get('date', '')[:10]} · {machine.get('cpu_model', '?')} · "
        f"{machine.get('usable_cpus', '?')} CPUs",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
