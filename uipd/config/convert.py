"""The strict cattrs converter: a wrong type is an error, never a coercion ("5000" is not a port,
"all" is not a list), an unknown key is an error, and every error names the file and the key path."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, TypeVar, get_args, get_origin

import cattrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError
from cattrs.v import transform_error

from uipd.config.errors import ConfigError

T = TypeVar("T")


class StrictValueError(ValueError):
    pass


def type_name(v: Any) -> str:
    return {str: "a string", bool: "a boolean", int: "an integer", float: "a number", list: "an array", dict: "a table"}.get(
        type(v), type(v).__name__
    )


def structure_str(v: Any, _: type) -> str:
    if not isinstance(v, str):
        raise StrictValueError(f"expected a string, got {type_name(v)} ({v!r})")
    return v


def structure_int(v: Any, _: type) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise StrictValueError(f"expected an integer, got {type_name(v)} ({v!r})")
    return v


def structure_float(v: Any, _: type) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise StrictValueError(f"expected a number, got {type_name(v)} ({v!r})")
    return float(v)


def structure_bool(v: Any, _: type) -> bool:
    if not isinstance(v, bool):
        raise StrictValueError(f"expected true or false, got {type_name(v)} ({v!r})")
    return v


def _is_sequence_type(t: Any) -> bool:
    origin = get_origin(t)
    return origin in (tuple, list, Sequence) and not (origin is tuple and len(get_args(t)) == 2 and get_args(t)[1] is not Ellipsis)


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    conv.register_structure_hook(str, structure_str)
    conv.register_structure_hook(int, structure_int)
    conv.register_structure_hook(float, structure_float)
    conv.register_structure_hook(bool, structure_bool)

    def sequence_hook(t: Any) -> Any:
        (item,) = get_args(t)[:1] or (Any,)
        origin = get_origin(t)
        make = tuple if origin in (tuple, Sequence) else list

        def structure(v: Any, _: Any) -> Any:
            if not isinstance(v, (list, tuple)):
                raise StrictValueError(f"expected an array, got {type_name(v)} ({v!r})")
            errors = []
            out = []
            for i, x in enumerate(v):
                try:
                    out.append(conv.structure(x, item))
                except Exception as e:  # collected so every bad element is reported
                    e.__notes__ = [*getattr(e, "__notes__", []), cattrs.errors.IterableValidationNote(f"index {i}", i, item)]
                    errors.append(e)
            if errors:
                raise IterableValidationError("bad array elements", errors, t)
            return make(out)

        return structure

    conv.register_structure_hook_factory(_is_sequence_type, sequence_hook)

    def literal_hook(t: Any) -> Any:
        allowed = get_args(t)

        def structure(v: Any, _: Any) -> Any:
            if v not in allowed or type(v) is not type(allowed[0]):
                raise StrictValueError(f"expected one of {', '.join(repr(a) for a in allowed)}, got {v!r}")
            return v

        return structure

    conv.register_structure_hook_factory(lambda t: get_origin(t) is Literal, literal_hook)
    return conv


converter = _make_converter()


def _format(exc: BaseException, type_: type | None) -> str:
    if isinstance(exc, StrictValueError):
        return str(exc)
    if isinstance(exc, ForbiddenExtraKeysError):
        keys = sorted(exc.extra_fields)
        return ("unknown key " if len(keys) == 1 else "unknown keys ") + ", ".join(repr(k) for k in keys)
    if isinstance(exc, KeyError):
        return "required key missing"
    if isinstance(exc, ValueError):
        return str(exc)
    return f"invalid value ({exc})"


def _messages(exc: BaseException, root: str) -> list[str]:
    out = []
    for line in transform_error(exc, path="$", format_exception=_format):
        message, _, path = line.rpartition(" @ ")
        path = path.removeprefix("$").lstrip(".")
        path = f"{root}.{path}" if root and path else (root or path)
        out.append(f"{path}: {message}" if path else message)
    return out


def structure_strict(data: Any, cls: type[T], *, file: str, root: str) -> T:
    """Load ``data`` into ``cls`` with the strict converter; raise ConfigError naming file and key path."""
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: {root}: expected a table, got {type_name(data)}")
    try:
        return converter.structure(data, cls)
    except (ClassValidationError, IterableValidationError) as exc:
        raise ConfigError(f"{file}: " + "; ".join(_messages(exc, root))) from None
    except (ValueError, TypeError) as exc:  # an attrs validator: its message starts with the field
        raise ConfigError(f"{file}: {root}: {exc}") from None
