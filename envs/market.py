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
from typing import Any, NamedTuple

from envs.errors import ConfigError
from envs.events import Side

__all__ = [
    "BPS",
    "MAX_PARTICIPATION",
    "TICK_TOLERANCE",
    "MarketSpec",
    "OrderTerms",
    "SlippageModel",
    "ceil_to_tick",
    "floor_to_step",
    "floor_to_tick",
    "round_to_tick",
]

BPS = 1e-4
"""One basis point as a fraction."""

MAX_PARTICIPATION = 1.0
"""Cap on the order's share of bar volume fed to the impact model, so impact stays finite. A bar with no
recorded volume (0 or NaN) counts as full participation: no liquidity evidence means the worst case."""

TICK_TOLERANCE = 1e-9
"""Tolerance (in ticks) of tick rounding, so a price already on the tick is not pushed one tick further."""
_TICK_TOLERANCE = TICK_TOLERANCE


class SlippageModel(StrEnum):
    """How the fill price moves against the order beyond half the spread.

    ``fixed``: a constant ``slippage_bps``. ``volume``: ``slippage_bps`` plus an impact that grows with
    the order's share of the bar's volume: ``impact_bps * sqrt(qty / bar_volume)`` (square-root law).
    """

    FIXED = "fixed"
    VOLUME = "volume"


# Enum members bound to module names: `Side.BUY` costs ~0.2 us per lookup on Python 3.11 (a descriptor),
# and the per-order path does dozens of them.
_BUY = Side.BUY
_FIXED = SlippageModel.FIXED


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


def ceil_to_tick(price: float, tick: float) -> float:
    """Round a price up to a multiple of ``tick`` (no-op when ``tick`` is 0): a buyer's fill."""
    if tick <= 0.0:
        return price
    return math.ceil(price / tick - _TICK_TOLERANCE) * tick


def floor_to_tick(price: float, tick: float) -> float:
    """Round a price down to a multiple of ``tick`` (no-op when ``tick`` is 0): a seller's fill."""
    if tick <= 0.0:
        return price
    return math.floor(price / tick + _TICK_TOLERANCE) * tick


class OrderTerms(NamedTuple):
    """A :class:`MarketSpec`'s numbers as the per-order arithmetic reads them (see
    :meth:`MarketSpec.order_terms`).

    Attributes:
        volume_impact_bps: ``impact_bps`` under the ``volume`` slippage model, else 0 (the impact
            term that applies).
        half_spread_bps: half of ``spread_bps`` (what a market order pays).
    """

    taker_fee: float
    half_spread_bps: float
    slippage_bps: float
    impact_bps: float
    volume_impact_bps: float
    qty_step: float
    min_qty: float
    min_notional: float
    price_tick: float


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
        worst_bps = self.spread_bps / 2 + self.slippage_bps + self.impact_bps
        if worst_bps >= 1 / BPS:
            raise ConfigError(
                f"half spread + slippage + impact is {worst_bps:g} bps; a sell would fill at a price <= 0",
                where=f"market spec {self.symbol}",
                fix="costs are in basis points: 1 bps = 0.01%; keep their sum below 10000",
            )
        if not self.base or not self.quote:
            base, _, quote = self.symbol.partition("/")
            object.__setattr__(self, "base", self.base or base)
            object.__setattr__(self, "quote", self.quote or quote.split(":")[0])

    def order_terms(self) -> OrderTerms:
        """The numbers every order reads, as floats (the simulated exchange and the trading core copy
        them when their spec is set)."""
        impact = float(self.impact_bps)
        return OrderTerms(
            taker_fee=float(self.taker_fee),
            half_spread_bps=0.5 * self.spread_bps,
            slippage_bps=float(self.slippage_bps),
            impact_bps=impact,
            volume_impact_bps=impact if self.slippage_model is not _FIXED else 0.0,
            qty_step=float(self.qty_step),
            min_qty=float(self.min_qty),
            min_notional=float(self.min_notional),
            price_tick=float(self.price_tick),
        )

    def slippage_bps_for(self, qty: float, bar_volume: float) -> float:
        """Adverse move beyond half the spread, in bps, for ``qty`` traded in a bar of ``bar_volume``.

        ``fixed``: ``slippage_bps``. ``volume``: ``slippage_bps + impact_bps * sqrt(participation)`` with
        ``participation = qty / bar_volume`` capped at :data:`MAX_PARTICIPATION` (full participation
        when the bar has no recorded volume).
        """
        if self.slippage_model is _FIXED or self.impact_bps == 0.0:
            return self.slippage_bps
        # `not bar_volume > 0` is also true for NaN: unknown volume is treated as no liquidity.
        if not bar_volume > 0.0:
            participation = MAX_PARTICIPATION
        else:
            participation = min(qty / bar_volume, MAX_PARTICIPATION)
        return self.slippage_bps + self.impact_bps * math.sqrt(participation)

    def cost_fraction(self, qty: float, bar_volume: float) -> float:
        """Half spread plus slippage as a fraction of the reference price (excludes fees)."""
        return (0.5 * self.spread_bps + self.slippage_bps_for(qty, bar_volume)) * BPS

    def fill_price(self, side: Side, price: float, qty: float, bar_volume: float = math.nan) -> float:
        """Price a market order of ``qty`` fills at, given the reference ``price`` (the bar's open).

        The order pays half the spread plus slippage against it: buys fill above, sells below. The
        result is rounded to the price tick *against* the order (up for buys, down for sells) so the
        rounding never gives the trader a better price than the model.
        """
        # cost_fraction() and slippage_bps_for() inlined, same arithmetic: this runs for every order.
        slippage = self.slippage_bps
        impact = self.impact_bps
        if self.slippage_model is not _FIXED and impact != 0.0:
            if not bar_volume > 0.0:
                participation = MAX_PARTICIPATION
            else:
                participation = min(qty / bar_volume, MAX_PARTICIPATION)
            slippage = slippage + impact * math.sqrt(participation)
        move = price * ((0.5 * self.spread_bps + slippage) * BPS)
        tick = self.price_tick
        # Tick rounding inlined (ceil_to_tick / floor_to_tick): this runs for every simulated order.
        if side is _BUY:
            p = price + move
            return math.ceil(p / tick - _TICK_TOLERANCE) * tick if tick > 0.0 else p
        p = price - move
        return math.floor(p / tick + _TICK_TOLERANCE) * tick if tick > 0.0 else p

    def fee(self, notional: float) -> float:
        """Taker fee in quote currency for a market order of ``notional`` (>= 0)."""
        return abs(notional) * self.taker_fee

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
