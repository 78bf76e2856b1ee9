"""Shared by the per-paper recipe tests: read a recipe's value, compare it with the paper's, find the quote.

Each ``tests/test_recipes_<paper>.py`` holds rows (recipe, key, expected value, quote from the
paper). Keys are ``reported.<metric>`` (the paper's numbers), ``recipe.<field>`` (e.g.
``recipe.checkpoint``) or a dotted run-config key.
"""

from __future__ import annotations

import math
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

from advcore.kernel.config import load_config
from advcore.cli.recipes import find_recipe

PAPERS = Path(__file__).resolve().parents[2] / "shared" / "papers"  # the shared checkout beside the repository


def recipe_value(name: str, key: str, *, with_defaults: bool = False):
    """The recipe's value at ``key``; ``with_defaults`` reads the validated config (advcore's defaults filled in)."""
    recipe = find_recipe(name)
    head, _, rest = key.partition(".")
    if head == "reported":
        return recipe.reported[rest]
    if head == "recipe":
        value = getattr(recipe, rest)
        return list(value) if isinstance(value, tuple) else value
    node = load_config(base=recipe.run_config()).model_dump() if with_defaults else recipe.run_config()
    for part in key.split("."):
        assert isinstance(node, dict) and part in node, f"{name}: {key} is not set in the recipe"
        node = node[part]
    return node


def fraction(text: str) -> Fraction:
    """A budget as papers write it, "8/255" or "1.9/255", as an exact fraction."""
    num, _, den = text.partition("/")
    return Fraction(num) / Fraction(den or "1")


def same(actual, expected) -> bool:
    """Budgets written as fractions compare exactly with a fraction and within 1e-9 with a parsed float;
    floats within 1e-9; everything else exactly."""
    if isinstance(expected, str) and "/" in expected:
        if isinstance(actual, str):
            return fraction(actual) == fraction(expected)
        return math.isclose(float(actual), float(fraction(expected)), rel_tol=1e-9)
    if isinstance(expected, float) and not isinstance(actual, (bool, str)):
        return math.isclose(actual, expected, rel_tol=1e-9)
    return actual == expected


def normalized(text: str) -> str:
    return " ".join(text.split())


@lru_cache(maxsize=None)
def paper_text(filename: str) -> str | None:
    """The whitespace-normalized text of a file in the papers folder; None where the folder is absent (skip)."""
    path = PAPERS / filename
    return normalized(path.read_text()) if PAPERS.is_dir() else None


def assert_quoted(quote: str, filename: str) -> None:
    """The quote behind a recipe value occurs in the paper (checked where the papers folder is present)."""
    text = paper_text(filename)
    if text is not None:
        assert normalized(quote) in text, f"quote not in {filename}: {quote!r}"


def assert_recipe_says(name: str, key: str, expected, quote: str, filename: str, *,
                       with_defaults: bool = False) -> None:
    """The recipe's value at ``key`` is the paper's (``same``), and the quote behind it is in the paper."""
    actual = recipe_value(name, key, with_defaults=with_defaults)
    assert same(actual, expected), f"{name}: {key} = {actual!r}, the paper states {expected!r}: {quote!r}"
    assert_quoted(quote, filename)
