"""Reference data that production code owns: USD conversion rates.

Silver converts every amount to USD with these rates (``amount_usd``), so gold and the
dashboards add up one currency and the model compares amounts across countries. A
currency without a rate converts to null and is counted apart, never summed as if it
were dollars. The simulator draws its local currencies from the same table.

A deployment with real money replaces this table with a daily FX table joined on
(currency, date); the rates here are fixed reference values.
"""

from __future__ import annotations

# ISO 4217 code -> units of the currency per US dollar.
UNITS_PER_USD: dict[str, float] = {
    "USD": 1.0,
    "GBP": 0.79,
    "EUR": 0.92,
    "CAD": 1.36,
    "AUD": 1.52,
    "JPY": 150.0,
    "BRL": 5.0,
    "MXN": 17.0,
    "INR": 83.0,
    "SEK": 10.5,
}


def usd_rate(currency: str) -> float | None:
    """Units of ``currency`` per USD, or None for a currency without a rate.

    >>> usd_rate("JPY")
    150.0
    """
    return UNITS_PER_USD.get(currency.upper())
