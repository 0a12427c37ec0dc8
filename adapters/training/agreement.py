"""`lorafleet label agreement`: are the model's labels good enough to train on?

The corrected review sample is the reference. Per field, agreement is the share of reviewed
documents where the model's value matches the corrected one (`metrics.values_match`: amounts
as numbers to the kopeck, names after case and quote folding); the claim amount also gets
precision/recall/F1 (`metrics.FieldCounts`), the headline metric of the task. The labels pass
when every field's agreement and the amount F1 reach the threshold.
"""

from __future__ import annotations

from typing import Any

from lorafleet.adapters.training.amounts import parse_amount
from lorafleet.adapters.training.label_data import LABEL_FIELDS, LabelError
from lorafleet.adapters.training.metrics import FieldCounts, values_match


def agreement_report(
    model_labels: dict[str, dict[str, Any]],
    corrected: dict[str, dict[str, Any]],
    threshold: float,
) -> dict[str, Any]:
    unknown = sorted(set(corrected) - set(model_labels))
    if unknown:
        raise LabelError(f"reviewed ids with no model label: {', '.join(unknown[:5])}")
    if not corrected:
        raise LabelError("the review sample is empty")
    counts = {name: FieldCounts() for name in LABEL_FIELDS}
    exact = 0
    disagreements: list[dict[str, Any]] = []
    for doc_id, truth in corrected.items():
        gold = {**truth, "claim_amount": _amount(truth["claim_amount"], doc_id)}
        predicted = model_labels[doc_id]
        wrong = [n for n in LABEL_FIELDS if not values_match(predicted.get(n), gold[n])]
        for name in LABEL_FIELDS:
            counts[name].add(predicted.get(name), gold[name])
        exact += not wrong
        disagreements += [
            {"id": doc_id, "field": n, "model": predicted.get(n), "corrected": gold[n]}
            for n in wrong
        ]
    fields = {name: counts[name].summary()["accuracy"] for name in LABEL_FIELDS}
    amount = counts["claim_amount"].summary()
    weakest = min(fields, key=lambda n: fields[n])
    return {
        "reviewed": len(corrected),
        "field_agreement": fields,
        "claim_amount": {k: amount[k] for k in ("precision", "recall", "f1")},
        "all_fields_agree": round(exact / len(corrected), 4),
        "threshold": threshold,
        "weakest_field": weakest,
        "good_enough": fields[weakest] >= threshold and amount["f1"] >= threshold,
        "disagreements": disagreements,
    }


def _amount(value: Any, doc_id: str) -> float | None:
    if value is None:
        return None
    amount = parse_amount(value)
    if amount is None:
        raise LabelError(f"{doc_id}: corrected claim_amount {value!r} is not a number")
    return amount


def render_agreement(report: dict[str, Any]) -> str:
    lines = ["| field | agreement |", "|---|---:|"]
    lines += [f"| {name} | {value:.3f} |" for name, value in report["field_agreement"].items()]
    lines.append(f"| claim_amount F1 | {report['claim_amount']['f1']:.3f} |")
    lines.append(f"| all fields | {report['all_fields_agree']:.3f} |")
    verdict = "good enough to train on" if report["good_enough"] else "NOT good enough to train on"
    lines.append(
        f"\n{report['reviewed']} reviewed; threshold {report['threshold']}: {verdict} "
        f"(weakest: {report['weakest_field']})"
    )
    return "\n".join(lines) + "\n"
