"""The chain's menu as the tills print it: product, flavour and price per size.

Prices are the ones found in real exports: each (size, product) has exactly one
price, and ``Hot Chocolate`` (1.40/1.70) and ``Hot chocolate`` (2.20/2.90) are two
different products, so names are kept exactly as written.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

SIZES = ("Regular", "Large")


@dataclass(frozen=True)
class MenuItem:
    size: str
    name: str
    flavour: str | None
    pence: int

    @cached_property
    def label(self) -> str:
        """The item as printed in a basket, without its price."""
        product = f"{self.name} - {self.flavour}" if self.flavour else self.name
        return f"{self.size} {product}"

    @cached_property
    def key(self) -> tuple[str, str, str | None]:
        """The product's identity: size, name and flavour, case-sensitive."""
        return (self.size, self.name, self.flavour)

    @cached_property
    def text(self) -> str:
        """The item as printed in a basket."""
        return f"{self.label} - {money(self.pence)}"


def money(pence: int) -> str:
    """Prices as the till prints them in baskets: always two decimals."""
    return f"{pence // 100}.{pence % 100:02d}"


# family name -> (flavours or None, regular price, large price, popularity weight)
_FAMILIES: dict[str, tuple[tuple[str, ...] | None, int, int, int]] = {
    "Americano": (None, 195, 225, 9),
    "Cappuccino": (None, 215, 245, 7),
    "Chai latte": (None, 230, 260, 9),
    "Cortado": (None, 205, 235, 6),
    "Espresso": (None, 150, 180, 4),
    "Filter coffee": (None, 150, 180, 9),
    "Flat white": (None, 215, 245, 9),
    "Flavoured hot chocolate": (("Caramel", "Hazelnut", "Vanilla"), 260, 290, 4),
    "Flavoured iced latte": (("Caramel", "Hazelnut", "Vanilla"), 275, 325, 9),
    "Flavoured latte": (("Caramel", "Gingerbread", "Hazelnut", "Vanilla"), 255, 285, 8),
    "Frappes": (("Chocolate Cookie", "Coffee", "Strawberries & Cream"), 275, 325, 4),
    "Hot Chocolate": (None, 140, 170, 8),
    "Hot chocolate": (None, 220, 290, 6),
    "Iced americano": (None, 215, 250, 8),
    "Iced latte": (None, 235, 285, 5),
    "Latte": (None, 215, 245, 10),
    "Luxury hot chocolate": (None, 240, 270, 3),
    "Mocha": (None, 230, 270, 4),
    "Red Label tea": (None, 120, 180, 6),
    "Smoothies": (("Berry Beautiful", "Carrot Kick", "Glowing Greens"), 200, 250, 5),
    "Speciality Tea": (
        ("Camomile", "Darjeeling", "Earl Grey", "English breakfast", "Fruit", "Green", "Peppermint"),
        130,
        160,
        9,
    ),
}


# Products bought together more often than chance: with the first in a basket, the
# second is added to it this often (where the branch sells both). They are the pairs
# `cafe-etl together` should find on top.
PAIRINGS = (
    (("Large", "Mocha", None), ("Regular", "Smoothies", "Berry Beautiful")),
    (("Regular", "Chai latte", None), ("Regular", "Speciality Tea", "Peppermint")),
    (("Large", "Flat white", None), ("Large", "Iced americano", None)),
)
PAIRING_CHANCE = 0.35


def families() -> list[str]:
    return list(_FAMILIES)


def family_weight(family: str) -> int:
    return _FAMILIES[family][3]


def items_of(family: str) -> list[MenuItem]:
    """Every menu item of a product family, in both sizes and every flavour."""
    flavours, regular, large, _ = _FAMILIES[family]
    out = []
    for flavour in flavours or (None,):
        out.append(MenuItem("Regular", family, flavour, regular))
        out.append(MenuItem("Large", family, flavour, large))
    return out


def full_menu() -> list[MenuItem]:
    return [item for family in _FAMILIES for item in items_of(family)]
