"""argparse ``type=`` converters shared by the subcommands: bounded numbers."""

from __future__ import annotations

import argparse
import math
from typing import Callable


def _bounds_problem(value: float, minimum: float | None, maximum: float | None, above: float | None) -> str | None:
    if minimum is not None and maximum is not None and not minimum <= value <= maximum:
        return f"must be {minimum:g}..{maximum:g}"
    if above is not None and not value > above:
        return f"must be greater than {above:g}"
    if minimum is not None and value < minimum:
        return "must not be negative" if minimum == 0 else f"must be at least {minimum:g}"
    if maximum is not None and value > maximum:
        return f"must be at most {maximum:g}"
    return None


def integer(
    minimum: int | None = None, maximum: int | None = None, *, base: int = 10
) -> Callable[[str], int]:
    """An integer within the bounds (``base=0`` also takes ``0x..``)."""

    def convert(text: str) -> int:
        try:
            value = int(text, base)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        problem = _bounds_problem(value, minimum, maximum, None)
        if problem:
            raise argparse.ArgumentTypeError(f"{problem}: {value}")
        return value

    return convert


def number(
    minimum: float | None = None, maximum: float | None = None, *, above: float | None = None
) -> Callable[[str], float]:
    """A finite number within the bounds; ``above`` excludes its value."""

    def convert(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
        problem = _bounds_problem(value, minimum, maximum, above)
        if problem:
            raise argparse.ArgumentTypeError(f"{problem}: {text}")
        return value

    return convert
