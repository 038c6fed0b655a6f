"""The one place for argument checks: layers, losses, loss recipes and the config use these.

Every check takes the argument's ``name`` (as the caller wants it shown: ``num_experts`` in a
layer, ``loss.args.margin`` in a recipe), the received ``value`` and the exception class to
raise (``ValueError`` for layers and losses, ``ConfigError`` for configuration), and returns
the normalised value. Messages follow one shape::

    `num_experts` must be a positive integer, received: num_experts=0

Received values are quoted with :func:`short_repr`, so a 10,000-character value never floods
a message. Booleans are never numbers (``True`` is not ``1`` here).
"""
from __future__ import annotations

import math
from typing import Any, Sequence, Tuple, Type

MAX_VALUE_CHARS = 80


def short_repr(value: Any, limit: int = MAX_VALUE_CHARS) -> str:
    """``repr(value)`` cut to about ``limit`` characters (``'aaaa...'(10000 chars)``)."""
    try:
        text = repr(value)
    except ValueError:  # an int past Python's 4300-digit limit on int -> str conversion
        if not isinstance(value, int):
            raise
        return f"<an integer of about {int(abs(value).bit_length() * 0.30103) + 1} digits>"
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...({len(text)} chars)"


def _fail(error: Type[Exception], name: str, what: str, value: Any) -> Exception:
    return error(f"`{name}` must be {what}, received: {name}={short_repr(value)}")


def is_number(value: Any) -> bool:
    """An int or float that is not a bool."""
    return not isinstance(value, bool) and isinstance(value, (int, float))


def is_int(value: Any) -> bool:
    """An int that is not a bool."""
    return not isinstance(value, bool) and isinstance(value, int)


def check_number(name: str, value: Any, low: float = -math.inf, high: float = math.inf,
                 low_open: bool = False, high_open: bool = False,
                 error: Type[Exception] = ValueError) -> float:
    """A finite number in ``[low, high]`` (ends open when ``low_open`` / ``high_open``)."""
    ok = is_number(value) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (
            value < high if high_open else value <= high)
    if not ok:
        bounds = []
        if low != -math.inf:
            bounds.append(f"{'>' if low_open else '>='} {low:g}")
        if high != math.inf:
            bounds.append(f"{'<' if high_open else '<='} {high:g}")
        what = "a finite number" + (" " + " and ".join(bounds) if bounds else "")
        raise _fail(error, name, what, value)
    return float(value)


def check_positive_number(name: str, value: Any, error: Type[Exception] = ValueError) -> float:
    """A finite number > 0."""
    if not (is_number(value) and math.isfinite(value) and value > 0):
        raise _fail(error, name, "a positive number", value)
    return float(value)


def check_nonneg_number(name: str, value: Any, error: Type[Exception] = ValueError) -> float:
    """A finite number >= 0."""
    if not (is_number(value) and math.isfinite(value) and value >= 0):
        raise _fail(error, name, "a finite number >= 0", value)
    return float(value)


def check_unit_number(name: str, value: Any, error: Type[Exception] = ValueError) -> float:
    """A number in [0, 1]."""
    if not (is_number(value) and 0.0 <= value <= 1.0):
        raise _fail(error, name, "a number in [0, 1]", value)
    return float(value)


def check_rate(name: str, value: Any, error: Type[Exception] = ValueError) -> float:
    """A dropout-like rate in [0, 1)."""
    if not (is_number(value) and 0.0 <= value < 1.0):
        raise _fail(error, name, "a float in [0, 1)", value)
    return float(value)


def check_positive_int(name: str, value: Any, error: Type[Exception] = ValueError) -> int:
    """An integer >= 1."""
    if not (is_int(value) and value >= 1):
        raise _fail(error, name, "a positive integer", value)
    return value


def check_nonneg_int(name: str, value: Any, error: Type[Exception] = ValueError) -> int:
    """An integer >= 0."""
    if not (is_int(value) and value >= 0):
        raise _fail(error, name, "an integer >= 0", value)
    return value


SEED_MAX = 2 ** 32 - 1  # NumPy's legacy seeding, which Keras' set_random_seed uses


def check_seed(name: str, value: Any, error: Type[Exception] = ValueError) -> int:
    """An integer in ``[0, 2**32 - 1]``: every seed NumPy, Python and TF all accept."""
    if not (is_int(value) and 0 <= value <= SEED_MAX):
        raise _fail(error, name, f"an integer in [0, {SEED_MAX}]", value)
    return value


def check_units(name: str, value: Any, error: Type[Exception] = ValueError,
                allow_empty: bool = False) -> Tuple[int, ...]:
    """Layer widths: a positive integer or a (non-empty unless ``allow_empty``) list of them."""
    if is_int(value):
        value = [value]
    if not isinstance(value, (list, tuple)) or (not value and not allow_empty) or any(
            not is_int(u) or u < 1 for u in value):
        what = "a list of positive integers" if allow_empty else \
            "a non-empty list of positive integers"
        raise _fail(error, name, what, value)
    return tuple(value)


def check_choice(name: str, value: Any, choices: Sequence, error: Type[Exception] = ValueError):
    """One of ``choices`` (compared by equality; a bool never matches a number)."""
    choices = tuple(choices)
    if isinstance(value, (list, dict, set)) or not any(
            value == c and isinstance(value, bool) == isinstance(c, bool) for c in choices):
        raise _fail(error, name, f"one of {list(choices)}", value)
    return value


def check_bool(name: str, value: Any, error: Type[Exception] = ValueError) -> bool:
    """``True`` or ``False`` (not 0/1, not strings)."""
    if not isinstance(value, bool):
        raise _fail(error, name, "true or false", value)
    return value


def check_tasks(name: str, value: Any, reserved: Sequence[str] = (),
                error: Type[Exception] = ValueError) -> Tuple[str, ...]:
    """A non-empty list of distinct, non-empty task names, none of them in ``reserved``
    (names of shared sub-layers, e.g. ``shared``)."""
    if (not isinstance(value, (list, tuple)) or not value
            or any(not isinstance(t, str) or not t for t in value)
            or len(set(value)) != len(value)):
        raise _fail(error, name, "a non-empty list of distinct task names", value)
    clash = [t for t in value if t in tuple(reserved)]
    if clash:
        raise error(f"`{name}` may not contain the reserved name(s) {clash} (used for shared "
                    f"sub-layers), received: {name}={short_repr(list(value))}")
    return tuple(value)
