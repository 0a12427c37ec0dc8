"""The court-decision extraction task: its label schema and the instruction the model sees.

The same instruction is used to build training examples (`synthetic`) and is sent unchanged at
evaluation time (the eval dataset carries it as its system message), so base and fine-tuned
models are asked exactly the same question.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Literal

DisputeSubject = Literal[
    "supply_contract", "lease", "construction_contract", "services", "loan", "transportation"
]
Outcome = Literal["satisfied", "partially_satisfied", "dismissed"]
Party = Literal["claimant", "defendant"]

DISPUTE_SUBJECTS: tuple[DisputeSubject, ...] = (
    "supply_contract",
    "lease",
    "construction_contract",
    "services",
    "loan",
    "transportation",
)
OUTCOMES: tuple[Outcome, ...] = ("satisfied", "partially_satisfied", "dismissed")
PARTIES: tuple[Party, ...] = ("claimant", "defendant")

# Short on purpose: every token of it is paid for in every training step on CPU.
SYSTEM_PROMPT = (
    "Return JSON with claimant, defendant, "
    f"dispute_subject ({'|'.join(DISPUTE_SUBJECTS)}), "
    "claim_amount (principal sum claimed, rubles, number), "
    f"outcome ({'|'.join(OUTCOMES)}), "
    "initiator (claimant|defendant: who filed the claim or appeal)."
)


@dataclass(frozen=True)
class CourtLabel:
    """The gold answer for one decision; `claim_amount` excludes penalties, interest and duty."""

    claimant: str
    defendant: str
    dispute_subject: DisputeSubject
    claim_amount: float
    outcome: Outcome
    initiator: Party

    def to_json(self) -> str:
        data = asdict(self)
        if float(self.claim_amount).is_integer():
            data["claim_amount"] = int(self.claim_amount)  # 1250000, not 1250000.0
        return json.dumps(data, ensure_ascii=False)


def label_json_schema() -> dict[str, object]:
    """`CourtLabel` as a JSON schema, strict enough for OpenAI structured outputs (every field
    required, nothing extra) and vLLM's guided decoding alike."""
    text = {"type": "string", "minLength": 1}
    return {
        "type": "object",
        "properties": {
            "claimant": text,
            "defendant": text,
            "dispute_subject": {"type": "string", "enum": list(DISPUTE_SUBJECTS)},
            "claim_amount": {"type": "number"},
            "outcome": {"type": "string", "enum": list(OUTCOMES)},
            "initiator": {"type": "string", "enum": list(PARTIES)},
        },
        "required": [
            "claimant", "defendant", "dispute_subject", "claim_amount", "outcome", "initiator"
        ],
        "additionalProperties": False,
    }  # fmt: skip
