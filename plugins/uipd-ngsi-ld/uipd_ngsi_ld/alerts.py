"""Alert rules: which entities match, and which newly match (only those are alerted)."""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping
from typing import Any

from attrs import define, field

from uipd_ngsi_ld.options import AlertRule

_COMPARE = {"==": operator.eq, "!=": operator.ne, ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


def matches(rule: AlertRule, entity: Mapping[str, Any]) -> bool:
    """Whether ``entity`` matches ``rule``; a missing field or a value of another kind never matches."""
    if rule.field not in entity:
        return False
    actual = entity[rule.field]
    if rule.op == "in":
        return actual in rule.value
    if rule.op == "not_in":
        return actual not in rule.value
    if rule.op in ("==", "!="):
        return bool(_COMPARE[rule.op](actual, rule.value))
    # ordering: numbers with numbers, strings with strings (ISO timestamps compare as strings)
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (actual, rule.value))
    strings = isinstance(actual, str) and isinstance(rule.value, str)
    return (numbers or strings) and bool(_COMPARE[rule.op](actual, rule.value))


def alert_data(rule: AlertRule, entity: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": entity["id"],
        "field": rule.field,
        "value": entity.get(rule.field),
        "rule": rule.describe(),
        "message": rule.message or f"{entity['id']}: {rule.field} = {entity.get(rule.field)!r} ({rule.describe()})",
        "entity": dict(entity),
    }


@define
class AlertTracker:
    """For one topic: which (entity, rule) pairs match now, so a rule alerts only on the change
    from not matching to matching."""

    rules: tuple[AlertRule, ...]
    active: set[tuple[str, int]] = field(factory=set)

    def seed(self, entities: Iterable[Mapping[str, Any]]) -> None:
        """Entities already published (e.g. before a restart) that match raise no new alert."""
        for entity in entities:
            self.check(entity)

    def check(self, entity: Mapping[str, Any]) -> list[AlertRule]:
        """Record ``entity``'s new state; return the rules it newly matches."""
        ident = str(entity["id"])
        new: list[AlertRule] = []
        for i, rule in enumerate(self.rules):
            key = (ident, i)
            if matches(rule, entity):
                if key not in self.active:
                    self.active.add(key)
                    new.append(rule)
            else:
                self.active.discard(key)
        return new

    def forget(self, ident: str) -> None:
        self.active = {key for key in self.active if key[0] != ident}
