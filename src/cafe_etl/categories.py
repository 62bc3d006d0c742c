"""Product categories from a small mapping file a user can edit (data/categories.toml).

A product's category follows from its name alone, ignoring case: a name listed under a
category's ``products``, else the first category with a keyword that is a whole word
of the name, else the file's ``default``. Names that differ only by case stay
distinct products (they differ in price) but share their category.

The warehouse keeps each product's category in ``dim_product.category`` so every
surface (report, API, dashboard, Grafana's marts) rolls up the same way; loads fill
it in for new products and bring every product in line with the mapping file in
use (``CAFE_ETL_CATEGORIES``, or the packaged default).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from cafe_etl.errors import ConfigError

ENV_CATEGORIES = "CAFE_ETL_CATEGORIES"
UNCATEGORISED = "Other"  # a product no load has categorised yet (a warehouse last loaded before categories)
MAX_CATEGORY = 40  # characters of a category's name
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


@dataclass(frozen=True)
class Category:
    name: str
    products: frozenset[str]  # lower case
    keywords: frozenset[str]  # lower case, whole words


@dataclass(frozen=True)
class Mapping:
    source: str
    default: str
    categories: tuple[Category, ...]

    def category_of(self, name: str) -> str:
        return self.explain(name)[0]

    def explain(self, name: str) -> tuple[str, str]:
        """The category of a product name, and why: ``product``, ``keyword`` or ``default``."""
        folded = " ".join(name.split()).lower()
        for category in self.categories:
            if folded in category.products:
                return category.name, "product"
        words = set(_WORD.findall(folded))
        for category in self.categories:
            if words & category.keywords:
                return category.name, "keyword"
        return self.default, "default"

    @property
    def names(self) -> list[str]:
        """Every category, in the file's order, then the default."""
        seen = [c.name for c in self.categories]
        return seen + ([self.default] if self.default not in seen else [])


def parse(text: str, source: str) -> Mapping:
    """A mapping from the text of a categories file; ConfigError says what is wrong."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"categories file {source}: not valid TOML ({exc})") from None
    default = _name(data.get("default", "Other"), source, "default")
    entries = data.get("category", [])
    if not isinstance(entries, list):
        raise ConfigError(f"categories file {source}: [[category]] entries expected")
    categories = []
    for i, entry in enumerate(entries, 1):
        if not isinstance(entry, dict):
            raise ConfigError(f"categories file {source}: category {i} is not a table")
        name = _name(entry.get("name"), source, f"category {i}'s name")
        categories.append(Category(name, _words(entry.get("products", []), source, name, "products"),
                                   _words(entry.get("keywords", []), source, name, "keywords")))
    names = [c.name for c in categories]
    if len(set(names)) != len(names):
        raise ConfigError(f"categories file {source}: a category is named twice")
    return Mapping(source, default, tuple(categories))


def _name(value: Any, source: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value.strip()) > MAX_CATEGORY:
        raise ConfigError(f"categories file {source}: {what} must be text of 1 to {MAX_CATEGORY} characters")
    return " ".join(value.split())


def _words(values: Any, source: str, category: str, what: str) -> frozenset[str]:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ConfigError(f"categories file {source}: {category}'s {what} must be a list of text")
    return frozenset(" ".join(v.split()).lower() for v in values if v.strip())


def load(path: Path | None = None) -> Mapping:
    """The mapping in use: ``path``, else ``$CAFE_ETL_CATEGORIES``, else the packaged default."""
    chosen = path or (Path(os.environ[ENV_CATEGORIES]) if os.environ.get(ENV_CATEGORIES) else None)
    if chosen is None:
        return _packaged()
    try:
        text = chosen.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the categories file {chosen}: {exc.strerror or exc}") from None
    return _parsed(text, str(chosen))


@lru_cache(maxsize=1)
def _packaged() -> Mapping:
    text = resources.files("cafe_etl").joinpath("data/categories.toml").read_text(encoding="utf-8")
    return parse(text, "the packaged default")


@lru_cache(maxsize=8)
def _parsed(text: str, source: str) -> Mapping:
    return parse(text, source)


def sync(query: Callable[[str, Sequence[Any]], list[tuple]], mapping: Mapping | None = None, *,
         new_only: bool = False) -> int:
    """Bring ``dim_product.category`` in line with the mapping; how many products changed.
    ``new_only``: only products without a category yet (a batch's new ones: a run brings
    the others in line when it starts). ``query(sql, params)`` runs one statement in the
    caller's transaction."""
    mapping = mapping or load()
    moves: dict[str, list[int]] = {}
    where = " WHERE category IS NULL" if new_only else ""
    for key, name, current in query(f"SELECT product_key, name, category FROM dim_product{where}", []):
        wanted = mapping.category_of(name)
        if wanted != current:
            moves.setdefault(wanted, []).append(int(key))
    for category, keys in sorted(moves.items()):
        query("UPDATE dim_product SET category = ? WHERE product_key = ANY(CAST(? AS BIGINT[]))", [category, keys])
    return sum(len(keys) for keys in moves.values())
