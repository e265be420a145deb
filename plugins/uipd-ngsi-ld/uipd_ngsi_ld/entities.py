"""NGSI-LD entities (normalized or keyValues) to uipd entities: plain values, points, field mapping,
and the version key used for change detection.  Pure functions, no I/O."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from uipd_ngsi_ld.options import EntityMapping

SYSTEM_MEMBERS = frozenset({"id", "type", "@context", "createdAt", "modifiedAt", "deletedAt", "scope"})
"""Entity members that are not attributes."""

_VALUE_MEMBER = {
    "Property": "value",
    "GeoProperty": "value",
    "Relationship": "object",
    "LanguageProperty": "languageMap",
    "ListProperty": "valueList",
    "ListRelationship": "objectList",
    "VocabProperty": "vocab",
    "JsonProperty": "json",
}
"""Where each NGSI-LD attribute type keeps its value in the normalized form."""


def point(value: Any) -> Any:
    """A GeoJSON Point ``{"type":"Point","coordinates":[lng,lat]}`` becomes ``{"lat","lng"}``;
    anything else (other geometries included) is returned unchanged."""
    if isinstance(value, dict) and value.get("type") == "Point":
        coords = value.get("coordinates")
        if (
            isinstance(coords, list)
            and len(coords) >= 2
            and all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in coords[:2])
        ):
            return {"lat": coords[1], "lng": coords[0]}
    return value


def _typed_literal(value: Any) -> Any:
    # an expanded JSON-LD literal such as {"@type": "DateTime", "@value": "2025-..."}
    if isinstance(value, dict) and "@value" in value:
        return value["@value"]
    return value


def attribute_value(attribute: Any, normalized: bool) -> Any:
    """The plain value of one attribute in either representation."""
    if isinstance(attribute, list) and normalized and attribute and all(isinstance(a, dict) for a in attribute):
        # a multi-attribute: the default instance (no datasetId), else the first
        default = next((a for a in attribute if "datasetId" not in a), attribute[0])
        return attribute_value(default, normalized)
    if normalized and isinstance(attribute, dict) and isinstance(attribute.get("type"), str) and attribute["type"] in _VALUE_MEMBER:
        kind = attribute["type"]
        value = _typed_literal(attribute.get(_VALUE_MEMBER[kind]))
        return point(value) if kind == "GeoProperty" else value
    return point(_typed_literal(attribute))


def plain_attributes(entity: Mapping[str, Any], normalized: bool) -> dict[str, Any]:
    """Every attribute of ``entity`` as a plain value."""
    return {name: attribute_value(a, normalized) for name, a in entity.items() if name not in SYSTEM_MEMBERS}


def to_uipd(entity: Mapping[str, Any], mapping: EntityMapping, normalized: bool) -> dict[str, Any]:
    """The uipd entity: ``id``, then (with ``keep_unmapped``) ``type`` and the attributes, then the
    mapped fields (a mapped attribute is moved, not copied)."""
    attributes = plain_attributes(entity, normalized)
    out: dict[str, Any] = {"id": entity["id"]}
    if mapping.keep_unmapped:
        consumed = set(mapping.fields.values()) - set(mapping.fields)
        if "type" in entity:
            out["type"] = entity["type"]
        out.update((k, v) for k, v in attributes.items() if k not in consumed)
    for target, source in mapping.fields.items():
        if source in attributes:
            out[target] = attributes[source]
        elif source == "type" and "type" in entity:
            out[target] = entity["type"]
    return out


def version_key(entity: Mapping[str, Any], timestamp_field: str, normalized: bool) -> str:
    """What tells whether an entity changed: ``modifiedAt`` when the broker sent it, else the
    configured timestamp attribute, else a hash of the whole entity."""
    modified = entity.get("modifiedAt")
    if isinstance(modified, str) and modified:
        return "m:" + modified
    if timestamp_field and timestamp_field in entity:
        return "t:" + json.dumps(attribute_value(entity[timestamp_field], normalized), sort_keys=True, default=str)
    canonical = json.dumps(entity, sort_keys=True, separators=(",", ":"), default=str)
    return "h:" + hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest()


def entity_id(entity: Any) -> str | None:
    """The entity's id when it is an object with a non-empty string ``id``."""
    if isinstance(entity, dict):
        ident = entity.get("id")
        if isinstance(ident, str) and ident:
            return ident
    return None
