# Russian court text is the point of this file: Cyrillic letters are not look-alike typos.
# ruff: noqa: RUF001
"""Phrase pools for the synthetic court decisions: parties, courts, subjects, outcomes, sums.

Everything here is invented. Company names are made-up roots with legal-form prefixes; courts
are real court *names* used only as decoration. The pools are shared by the train and test
splits; what the splits do not share is the document templates (see `synthetic_templates`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from lorafleet.adapters.training.court_task import DisputeSubject, Outcome, Party

Lang = str  # "ru" | "en"

_ROOTS: tuple[tuple[str, str], ...] = (
    ("Вектор", "Vector"),
    ("Гранит", "Granit"),
    ("СеверТранс", "Severtrans"),
    ("ТехноПром", "Tekhnoprom"),
    ("Меридиан", "Meridian"),
    ("Восток-Агро", "Vostok-Agro"),
    ("Стройинвест", "Stroyinvest"),
    ("Орион", "Orion"),
    ("Балтснаб", "Baltsnab"),
    ("Уралмет", "Uralmet"),
    ("Лидер", "Lider"),
    ("ЭнергоСервис", "EnergoServis"),
    ("Кварц", "Kvarts"),
    ("Прогресс", "Progress"),
    ("Альянс", "Alliance"),
    ("Сибирь-Логистик", "Sibir-Logistic"),
    ("Волга-Инвест", "Volga-Invest"),
    ("Дельта", "Delta"),
    ("Феникс", "Feniks"),
    ("Континент", "Kontinent"),
    ("Полюс", "Polyus"),
    ("Атлант", "Atlant"),
)
_SUFFIXES: tuple[tuple[str, str], ...] = (
    ("", ""),
    ("", ""),
    ("-М", "-M"),
    (" Плюс", " Plus"),
    ("-Строй", "-Stroy"),
    (" Групп", " Group"),
    ("-2000", "-2000"),
)
_FORMS: tuple[tuple[str, str], ...] = (("ООО", "LLC"), ("АО", "JSC"), ("ПАО", "PJSC"))
_SURNAMES: tuple[tuple[str, str], ...] = (
    ("Иванов", "Ivanov"),
    ("Петрова", "Petrova"),
    ("Смирнов", "Smirnov"),
    ("Кузнецова", "Kuznetsova"),
    ("Соколов", "Sokolov"),
    ("Морозов", "Morozov"),
    ("Волкова", "Volkova"),
    ("Лебедев", "Lebedev"),
)
_INITIALS: tuple[tuple[str, str], ...] = (
    ("А", "A"),
    ("В", "V"),
    ("Е", "E"),
    ("И", "I"),
    ("К", "K"),
    ("М", "M"),
    ("Н", "N"),
    ("О", "O"),
    ("П", "P"),
    ("С", "S"),
)

COURTS: dict[Lang, tuple[str, ...]] = {
    "ru": (
        "Арбитражный суд города Москвы",
        "Арбитражный суд Свердловской области",
        "Арбитражный суд Новосибирской области",
        "Арбитражный суд Республики Татарстан",
        "Арбитражный суд Краснодарского края",
    ),
    "en": (
        "The Arbitrazh Court of Moscow",
        "The Arbitrazh Court of the Sverdlovsk Region",
        "The Arbitrazh Court of the Novosibirsk Region",
        "The Arbitrazh Court of Tatarstan",
        "The Arbitrazh Court of the Krasnodar Territory",
    ),
}
APPEAL_COURTS: dict[Lang, tuple[str, ...]] = {
    "ru": (
        "Девятый арбитражный апелляционный суд",
        "Тринадцатый арбитражный апелляционный суд",
        "Семнадцатый арбитражный апелляционный суд",
    ),
    "en": (
        "The Ninth Arbitrazh Appeal Court",
        "The Thirteenth Arbitrazh Appeal Court",
        "The Seventeenth Arbitrazh Appeal Court",
    ),
}

SUBJECTS: dict[Lang, dict[DisputeSubject, tuple[str, ...]]] = {
    "ru": {
        "supply_contract": (
            "долга по договору поставки",
            "задолженности за поставленный товар",
            "оплаты товара по договору поставки",
        ),
        "lease": (
            "задолженности по арендной плате",
            "долга по договору аренды",
            "арендных платежей",
        ),
        "construction_contract": (
            "стоимости работ по договору подряда",
            "долга по договору строительного подряда",
            "оплаты выполненных работ",
        ),
        "services": (
            "стоимости оказанных услуг",
            "долга по договору оказания услуг",
            "задолженности за услуги",
        ),
        "loan": ("суммы займа", "долга по договору займа", "невозвращённого займа"),
        "transportation": (
            "провозной платы",
            "долга по договору перевозки",
            "стоимости перевозки грузов",
        ),
    },
    "en": {
        "supply_contract": (
            "debt under a supply contract",
            "the price of goods delivered",
            "payment for supplied goods",
        ),
        "lease": ("unpaid rent", "arrears under a lease agreement", "rent due under a lease"),
        "construction_contract": (
            "the price of construction works",
            "debt under a construction contract",
            "payment for completed building works",
        ),
        "services": (
            "fees for services rendered",
            "debt under a services agreement",
            "unpaid service fees",
        ),
        "loan": ("the outstanding loan", "debt under a loan agreement", "the unreturned loan"),
        "transportation": (
            "freight charges",
            "debt under a carriage contract",
            "unpaid cargo transport fees",
        ),
    },
}

# Outcome as the deciding court states it (present) and as an appeal court reports it (past).
OUTCOME_NOW: dict[Lang, dict[Outcome, tuple[str, ...]]] = {
    "ru": {
        "satisfied": ("иск удовлетворить полностью", "исковые требования удовлетворить"),
        "partially_satisfied": ("иск удовлетворить частично", "требования удовлетворить в части"),
        "dismissed": ("в удовлетворении иска отказать", "в иске отказать"),
    },
    "en": {
        "satisfied": ("the claim is granted in full", "the claim is upheld"),
        "partially_satisfied": ("the claim is partially granted", "the claim is allowed in part"),
        "dismissed": ("the claim is dismissed", "the claim is rejected"),
    },
}
OUTCOME_PAST: dict[Lang, dict[Outcome, tuple[str, ...]]] = {
    "ru": {
        "satisfied": ("иск удовлетворил полностью", "удовлетворил требования"),
        "partially_satisfied": ("удовлетворил иск частично", "удовлетворил требования в части"),
        "dismissed": ("в иске отказал", "отказал в удовлетворении иска"),
    },
    "en": {
        "satisfied": ("granted the claim in full", "upheld the claim"),
        "partially_satisfied": ("partially granted the claim", "allowed the claim in part"),
        "dismissed": ("dismissed the claim", "rejected the claim"),
    },
}
ROLE_GENITIVE: dict[Party, str] = {"claimant": "истца", "defendant": "ответчика"}
ROLE_NOMINATIVE: dict[Party, str] = {"claimant": "истец", "defendant": "ответчик"}
ROLE_INSTRUMENTAL: dict[Party, str] = {"claimant": "истцом", "defendant": "ответчиком"}


@dataclass(frozen=True)
class PartyNames:
    ru: str
    en: str


def company(rng: random.Random) -> PartyNames:
    """A made-up legal entity (or, one time in eight, a sole proprietor) in both languages."""
    if rng.random() < 0.125:
        (sur_ru, sur_en), (i_ru, i_en), (o_ru, o_en) = (
            rng.choice(_SURNAMES),
            rng.choice(_INITIALS),
            rng.choice(_INITIALS),
        )
        return PartyNames(f"ИП {sur_ru} {i_ru}.{o_ru}.", f"Sole proprietor {sur_en} {i_en}.{o_en}.")
    (root_ru, root_en), (suf_ru, suf_en) = rng.choice(_ROOTS), rng.choice(_SUFFIXES)
    form_ru, form_en = rng.choice(_FORMS)
    return PartyNames(f"{form_ru} «{root_ru}{suf_ru}»", f"{root_en}{suf_en} {form_en}")


def two_companies(rng: random.Random) -> tuple[PartyNames, PartyNames]:
    first = company(rng)
    second = company(rng)
    while second.ru.split("«")[-1][:4] == first.ru.split("«")[-1][:4]:
        second = company(rng)
    return first, second
