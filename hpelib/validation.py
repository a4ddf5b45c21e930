"""Values of settings: coerced to their declared type where YAML is ambiguous, then checked.

YAML reads ``1e-3`` as a string (it needs a dot to be a float: ``1.0e-3``),
and users quote numbers. Every setting of :class:`~hpelib.engine.TrainConfig`,
:class:`~hpelib.models.ModelConfig`, an SSL task's or a pose head's options
has a declared type (the dataclass field or the constructor's annotation);
:func:`coerce` turns ``"1e-3"`` into ``0.001`` for a float, ``"10"`` into
``10`` for an int, ``"true"`` into ``True`` for a bool, and refuses what does
not fit (``"ten"`` for an int, ``True`` for a number) with a message that
names the setting. :func:`check_fields` adds each field's own range check and
reports every problem, not only the first.
"""
from __future__ import annotations

import inspect
import types
import typing
from typing import Any, Callable

__all__ = ["coerce", "check_fields", "option_types", "problems_message"]

#: a field's own check: ``(predicate on the coerced value, what a valid value is)``
FieldCheck = tuple[Callable[[Any], bool], str]


def _optional_inner(tp):
    """``X`` for ``Optional[X]`` / ``X | None``, else None."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0]
    return None


def coerce(value, tp):
    """``value`` as type ``tp`` (int, float, bool, str, or Optional of one; anything else is passed through).

    Raises ``ValueError`` saying what was expected.
    """
    inner = _optional_inner(tp)
    if inner is not None:
        return None if value is None else coerce(value, inner)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise ValueError(f"expected true or false, got {value!r}")
    if tp in (int, float):
        numeric = (int, float) if tp is float else int  # an int setting takes no 2.5
        if isinstance(value, numeric) and not isinstance(value, bool):
            return tp(value)
        if isinstance(value, str):
            try:
                return tp(value.strip())
            except ValueError:
                pass
        raise ValueError(f"expected {'an integer' if tp is int else 'a number'}, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ValueError(f"expected a string, got {value!r}")
    return value


def check_fields(types_: dict, values: dict, checks: dict[str, FieldCheck] | None = None) -> tuple[dict, list[str]]:
    """Coerce each of ``values`` to its type in ``types_`` and run its check from ``checks``.

    Returns ``(coerced values, problems)``; each problem names its field. Fields
    absent from ``values`` are not looked at (so a partial block, e.g. one
    variant's ``train`` settings, can be checked alone).
    """
    out, problems = {}, []
    for name, value in values.items():
        try:
            v = coerce(value, types_[name]) if name in types_ else value
        except ValueError as e:
            problems.append(f"{name}: {e}")
            continue
        check = (checks or {}).get(name)
        if check is not None and v is not None and not _passes(check[0], v):
            problems.append(f"{name} must be {check[1]}, got {value!r}")
            continue
        out[name] = v
    return out, problems


def _passes(predicate, value) -> bool:
    try:
        return bool(predicate(value))
    except (TypeError, ValueError):
        return False


def field_types(cls) -> dict:
    """The resolved annotations of a dataclass's fields."""
    return typing.get_type_hints(cls)


def option_types(constructor) -> dict:
    """The annotated keyword parameters of a constructor (a class's ``__init__`` or a function)."""
    target = constructor.__init__ if inspect.isclass(constructor) else constructor
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # an annotation that does not resolve: no coercion for that constructor
        return {}
    return {k: v for k, v in hints.items() if k != "return"}


def problems_message(where: str, problems: list[str]) -> str:
    """One message for several problems: ``where: p1; p2`` (one per line when there are many)."""
    if len(problems) <= 2:
        return f"{where}: " + "; ".join(problems)
    return f"{where}:\n" + "\n".join(f"  - {p}" for p in problems)
