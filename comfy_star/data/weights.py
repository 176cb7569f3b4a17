"""Draw weights given on the command line ("two_objects=2,position=0"): parsed once, checked by name."""
from __future__ import annotations


def parse_weights(text: str, names, what: str) -> dict[str, float]:
    """"a=2,b=1.5" → {"a": 2.0, "b": 1.5}; "" → {}. A name left out weighs 1; every bad part is named."""
    weights = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, eq, value = part.partition("=")
        if not eq or name.strip() not in names:
            raise ValueError(f"{what} weight {part!r}: expected NAME=WEIGHT with NAME one of {tuple(names)}")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"{what} weight {part!r}: {value!r} is not a number") from None
        if not weights[name.strip()] >= 0:
            raise ValueError(f"{what} weight {part!r}: the weight must be 0 or more")
    if weights and not any(weights.get(n, 1.0) > 0 for n in names):
        raise ValueError(f"{what} weights {text!r} leave no {what} to draw")
    return weights
