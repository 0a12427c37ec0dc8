# Russian court text is the point of this file: Cyrillic letters are not look-alike typos.
# ruff: noqa: RUF001
"""Document templates for the synthetic court decisions, split between train and test.

Each template is one document structure in one language, either a first-instance decision
(the claimant initiated it) or an appeal ruling (the party that appealed initiated it). The
test split uses only templates listed in `TEST_TEMPLATES`, so a model is scored on phrasings it
never saw in training; the phrase pools (names, subjects, amount styles) are shared.

Placeholders: C, D (parties), court, appeal_court, amount, subject, extras (distractor sums,
leading ", " included), tail (an optional closing sentence with more distractor sums), outcome
(present, as the deciding court says it), outcome_past (as an appeal court reports it), role_*
(the appellant in several grammatical forms), case.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["first", "appeal"]


@dataclass(frozen=True)
class Template:
    id: str
    lang: str
    kind: Kind
    text: str


TEMPLATES: tuple[Template, ...] = (
    # --- Russian, train
    Template(
        "ru_heard", "ru", "first",
        "{court} рассмотрел иск {C} к {D} о взыскании {amount} {subject}{extras}. "
        "Решил: {outcome}.{tail}",
    ),
    Template(
        "ru_card", "ru", "first",
        "Дело № {case}. Истец: {C}. Ответчик: {D}. Требование: взыскать {amount} "
        "{subject}{extras}. Суд решил: {outcome}.{tail}",
    ),
    Template(
        "ru_asks", "ru", "first",
        "{C} просит взыскать с {D} {amount} {subject}{extras}. {court}: {outcome}.{tail}",
    ),
    Template(
        "ru_appeal_by", "ru", "appeal",
        "{appeal_court} рассмотрел апелляционную жалобу {role_gen} на решение по иску {C} к {D} "
        "о взыскании {amount} {subject}{extras}. Суд первой инстанции {outcome_past}. "
        "Решение оставлено без изменения.{tail}",
    ),
    Template(
        "ru_disagreed", "ru", "appeal",
        "{C} предъявило иск к {D} о взыскании {amount} {subject}{extras}. Суд {outcome_past}. "
        "Не согласившись с решением, {role_nom} подал апелляционную жалобу, которая "
        "отклонена ({appeal_court}).{tail}",
    ),
    # --- Russian, test only
    Template(
        "ru_t_summary", "ru", "first",
        "Иск {C} против {D}: сумма основного требования {amount} ({subject}){extras}. "
        "Итог рассмотрения ({court}): {outcome}.{tail}",
    ),
    Template(
        "ru_t_lodged", "ru", "appeal",
        "Апелляция подана {role_instr} по делу {C} против {D} (взыскание {subject}, "
        "основной долг {amount}{extras}). Первая инстанция {outcome_past}; {appeal_court} "
        "оставил решение в силе.{tail}",
    ),
    # --- English, train
    Template(
        "en_heard", "en", "first",
        "{court} heard the claim of {C} against {D} for {amount} of {subject}{extras}. "
        "Held: {outcome}.{tail}",
    ),
    Template(
        "en_card", "en", "first",
        "Case {case}. Claimant: {C}. Defendant: {D}. Claim: {amount} ({subject}){extras}. "
        "Decision: {outcome}.{tail}",
    ),
    Template(
        "en_seeks", "en", "first",
        "{C} seeks {amount} from {D} for {subject}{extras}. {court}: {outcome}.{tail}",
    ),
    Template(
        "en_appeal_by", "en", "appeal",
        "{appeal_court} considered the appeal of the {role_en} against the judgment in {C} v {D} "
        "concerning {amount} of {subject}{extras}. The first instance court {outcome_past}. "
        "The judgment stands.{tail}",
    ),
    Template(
        "en_sued", "en", "appeal",
        "{C} sued {D} to recover {amount} of {subject}{extras}. The trial court {outcome_past}. "
        "The {role_en} appealed; {appeal_court} dismissed the appeal.{tail}",
    ),
    # --- English, test only
    Template(
        "en_t_ruling", "en", "first",
        "Ruling on the lawsuit by {C} (claimant) versus {D} (defendant). Principal sum: "
        "{amount}, {subject}{extras}. Result ({court}): {outcome}.{tail}",
    ),
    Template(
        "en_t_lodged", "en", "appeal",
        "Appeal lodged by the {role_en} in {C} v {D} ({subject}, principal {amount}{extras}). "
        "At first instance the court {outcome_past}; {appeal_court} upheld that ruling.{tail}",
    ),
)  # fmt: skip

TEST_TEMPLATES = frozenset({"ru_t_summary", "ru_t_lodged", "en_t_ruling", "en_t_lodged"})


def templates_for(split: str) -> tuple[Template, ...]:
    """The templates of one split: "test" gets the held-out ones, anything else the rest."""
    held_out = split == "test"
    return tuple(t for t in TEMPLATES if (t.id in TEST_TEMPLATES) == held_out)
