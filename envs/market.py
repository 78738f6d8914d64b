"""Per-symbol exchange rules and costs.

A :class:`MarketSpec` carries what a real exchange enforces on an order (minimum quantity, quantity step,
minimum notional, price tick) and what trading costs (fees, spread, slippage). The simulated broker,
the paper broker and the learning manager's minimum learner all read it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from envs.errors import ConfigError

__all__ = ["MarketSpec", "SlippageModel", "floor_to_step", "round_to_tick"]


class SlippageModel(StrEnum):
    """How the fill price moves against the order beyond half the spread.

    ``fixed``: a constant ``slippage_bps``. ``volume``: ``slippage_bps`` plus an impact that grows with
    the order's share of the bar's volume: ``impact_bps * sqrt(qty / bar_volume)`` (square-root law).
    """

    FIXED = "fixed"
    VOLUME = "volume"


def floor_to_step(qty: float, step: float) -> float:
    """Round a quantity down to a multiple of ``step`` (no-op when ``step`` is 0).

    A tiny relative tolerance keeps 0.3 / 0.1 from flooring to 0.2 through binary rounding.
    """
    if step <= 0.0:
        return qty
    n = math.floor(qty / step * (1.0 + 1e-12) + 1e-9)
    return max(n, 0) * step


def round_to_tick(price: float, tick: float) -> float:
    """Round a price to the nearest multiple of ``tick`` (no-op when ``tick`` is 0)."""
    if tick <= 0.0:
        return price
    return round(price / tick) * tick


@dataclass(frozen=True, slots=True)
class MarketSpec:
    """Exchange rules and costs of one symbol.

    Attributes:
        symbol: market symbol, e.g. ``"BTC/USDT"`` or ``"EURUSD"``.
        taker_fee: fee as a fraction of notional per side for market orders (0.001 = 0.1%).
        maker_fee: fee as a fraction of notional per side for resting orders.
        spread_bps: full quoted spread in basis points; a market order pays half of it.
        slippage_bps: extra adverse move in basis points paid by every market order.
        slippage_model: ``fixed`` or ``volume`` (see :class:`SlippageModel`).
        impact_bps: coefficient of the volume-participation impact (``volume`` model only).
        min_qty: smallest base quantity the exchange accepts.
        qty_step: base quantity increment (lot size); quantities are floored to it.
        min_notional: smallest quote value (qty * price) the exchange accepts.
        price_tick: price increment.
        base: base currency code (``"BTC"``); derived from ``symbol`` when omitted.
        quote: quote currency code (``"USDT"``).
    """

    symbol: str
    taker_fee: float = 0.001
    maker_fee: float = 0.001
    spread_bps: float = 0.0
    slippage_bps: float = 0.0
    slippage_model: SlippageModel = SlippageModel.FIXED
    impact_bps: float = 0.0
    min_qty: float = 0.0
    qty_step: float = 0.0
    min_notional: float = 0.0
    price_tick: float = 0.0
    base: str = ""
    quote: str = ""

    def __post_init__(self) -> None:
        if not self.symbol:
            raise ConfigError("market spec has an empty symbol", fix="give the symbol, e.g. 'BTC/USDT'")
        for name in (
            "taker_fee",
            "maker_fee",
            "spread_bps",
            "slippage_bps",
            "impact_bps",
            "min_qty",
            "qty_step",
            "min_notional",
            "price_tick",
        ):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ConfigError(
                    f"{name}={value!r} must be a finite number >= 0",
                    where=f"market spec {self.symbol}",
                    fix=f"set {name} to 0 or a positive number",
                )
        if self.taker_fee >= 1 or self.maker_fee >= 1:
            raise ConfigError(
                "fees are fractions of notional and must be < 1",
                where=f"market spec {self.symbol}",
                fix="write 0.1% as 0.001",
            )
        object.__setattr__(self, "slippage_model", SlippageModel(self.slippage_model))
        if not self.base or not self.quote:
            base, _, quote = self.symbol.partition("/")
            object.__setattr__(self, "base", self.base or base)
            object.__setattr__(self, "quote", self.quote or quote.split(":")[0])

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (round-trips through :meth:`from_dict`)."""
        d = asdict(self)
        d["slippage_model"] = str(self.slippage_model)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MarketSpec:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(
                f"unknown market spec field(s) {unknown}",
                fix=f"use only {sorted(known)}",
            )
        return cls(**dict(d))

    @classmethod
    def from_ccxt(cls, market: Mapping[str, Any], **overrides: Any) -> MarketSpec:
        """Build a spec from a ccxt unified market dict (``exchange.markets[symbol]``).

        Reads ``limits.amount.min``, ``limits.cost.min``, ``precision.amount``/``precision.price``
        (a step size under ccxt's ``TICK_SIZE`` precision mode, a number of decimals otherwise, told
        apart by ``precisionMode`` when given and else by whether the value is an integer > 0),
        ``taker`` and ``maker``. Missing entries fall back to this class's defaults; ``overrides``
        (e.g. ``slippage_bps=2``) win over the market dict.
        """
        if "symbol" not in market:
            raise ConfigError("ccxt market dict has no 'symbol'", fix="pass exchange.markets[symbol]")

        def _num(value: Any) -> float | None:
            if value is None:
                return None
            try:
                out = float(value)
            except (TypeError, ValueError):
                return None
            return out if math.isfinite(out) else None

        limits = market.get("limits") or {}
        precision = market.get("precision") or {}
        mode = market.get("precisionMode")

        def _step(value: Any) -> float | None:
            v = _num(value)
            if v is None:
                return None
            is_decimals = mode == "decimal_places" or (mode is None and v >= 1 and float(v).is_integer())
            if mode == "tick_size":
                is_decimals = False
            return 10.0 ** (-int(v)) if is_decimals else v

        fields: dict[str, Any] = {"symbol": str(market["symbol"])}
        for key, value in (
            ("taker_fee", _num(market.get("taker"))),
            ("maker_fee", _num(market.get("maker"))),
            ("min_qty", _num((limits.get("amount") or {}).get("min"))),
            ("min_notional", _num((limits.get("cost") or {}).get("min"))),
            ("qty_step", _step(precision.get("amount"))),
            ("price_tick", _step(precision.get("price"))),
            ("base", market.get("base")),
            ("quote", market.get("quote")),
        ):
            if value is not None:
                fields[key] = value
        fields.update(overrides)
        return cls(**fields)
