"""``BacktestResult``: everything one backtest produced, in tables, saved to and loaded from a directory.

A result holds

* ``curve``: one row per bar, indexed by the bar's open time (UTC): ``open``, ``close``, ``target``
  (the target exposure decided at this bar's close; NaN where none was), ``position`` (signed base
  quantity after the bar), ``cash`` and ``equity`` (marked at the close). The first row is the decision
  bar before the first fill: its equity is the initial cash.
* ``orders``: every order sent, filled or not (:data:`ORDER_COLUMNS`); ``fills``, ``rejections`` and
  ``errors`` are its rows by status.
* ``trades``: the trade journal (:data:`TRADE_COLUMNS`), one row per closed trade slice, as
  :class:`envs.events.TradeResult` defines them, followed (when the engine had them) by the entry-time
  features as float columns named ``<group>.<feature>`` (``entry_signals.rsi_14`` ...).
* ``meta``: what produced it (engine, policy, symbol, market spec, account settings, calendar ...).
* ``metrics``: :class:`backtests.metrics.Metrics`, computed on first use.

On disk (:meth:`BacktestResult.save`): ``curve.parquet``, ``orders.parquet``, ``trades.parquet``,
``trades.csv`` (the journal for spreadsheets and other backtesters), ``metrics.json`` and ``meta.json``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from backtests.metrics import Calendar, Metrics, compute_metrics
from envs.errors import StateError
from envs.events import OrderResult, OrderStatus, TradeResult
from envs.portfolio import SNAPSHOT_FIELDS as SNAPSHOT_GROUPS

__all__ = [
    "CURVE_COLUMNS",
    "ORDER_COLUMNS",
    "TRADE_COLUMNS",
    "BacktestResult",
    "orders_frame",
    "trades_frame",
]

CURVE_COLUMNS: Final = ("open", "close", "target", "position", "cash", "equity")
ORDER_COLUMNS: Final = (
    "time",
    "order_id",
    "side",
    "requested_qty",
    "price",
    "status",
    "filled_qty",
    "fee",
    "slippage",
    "kind",
    "message",
    "code",
)
TRADE_COLUMNS: Final = (
    "trade_id",
    "symbol",
    "side",
    "entry_time",
    "exit_time",
    "entry_price",
    "exit_price",
    "quantity",
    "fees",
    "pnl",
    "return_pct",
    "duration_bars",
    "exit_reason",
)
_TIME_COLUMNS: Final = ("time", "entry_time", "exit_time")
_FILES: Final = {
    "curve": "curve.parquet",
    "orders": "orders.parquet",
    "trades": "trades.parquet",
    "journal": "trades.csv",
    "metrics": "metrics.json",
    "meta": "meta.json",
}


def _utc(times_ns: npt.ArrayLike) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.to_datetime(np.asarray(times_ns, dtype=np.int64), unit="ns", utc=True))


def orders_frame(orders: Iterable[OrderResult]) -> pd.DataFrame:
    """The orders table of a sequence of :class:`~envs.events.OrderResult`."""
    rows = [
        (
            o.time_ns,
            o.order_id,
            str(o.side),
            o.requested_qty,
            o.price,
            str(o.status),
            o.filled_qty,
            o.fee,
            o.slippage,
            "" if o.kind is None else str(o.kind),
            o.message,
            "" if o.code is None else o.code,
        )
        for o in orders
    ]
    return orders_from_columns(list(zip(*rows, strict=True)) if rows else [[] for _ in ORDER_COLUMNS])


def orders_from_columns(columns: list[Any]) -> pd.DataFrame:
    """The orders table from one sequence per :data:`ORDER_COLUMNS` entry (times as epoch ns)."""
    data = dict(zip(ORDER_COLUMNS, columns, strict=True))
    frame = pd.DataFrame(
        {
            "time": _utc(data["time"]),
            "order_id": pd.array(data["order_id"], dtype="str"),
            "side": pd.array(data["side"], dtype="str"),
            "requested_qty": np.asarray(data["requested_qty"], dtype=np.float64),
            "price": np.asarray(data["price"], dtype=np.float64),
            "status": pd.array(data["status"], dtype="str"),
            "filled_qty": np.asarray(data["filled_qty"], dtype=np.float64),
            "fee": np.asarray(data["fee"], dtype=np.float64),
            "slippage": np.asarray(data["slippage"], dtype=np.float64),
            "kind": pd.array(data["kind"], dtype="str"),
            "message": pd.array(data["message"], dtype="str"),
            "code": pd.array(data["code"], dtype="str"),
        }
    )
    return frame


def _snapshot_columns(trades: Sequence[TradeResult]) -> dict[str, npt.NDArray[np.float64]]:
    """Entry-time features of every trade as float columns ``<group>.<feature>`` (NaN where absent).

    Trades of one env share the feature names, so each group is one 2-D array built from the dicts'
    values; trades with other names (or none) fall back to a keyed merge.
    """
    out: dict[str, npt.NDArray[np.float64]] = {}
    for group in SNAPSHOT_GROUPS:
        dicts = [getattr(t, group) for t in trades]
        names = list(dicts[0]) if dicts else []
        if not any(dicts):
            continue
        if all(len(d) == len(names) and list(d) == names for d in dicts):
            values = np.asarray([list(d.values()) for d in dicts], dtype=np.float64).reshape(len(dicts), -1)
            for j, name in enumerate(names):
                out[f"{group}.{name}"] = values[:, j]
        else:
            frame = pd.DataFrame.from_records([dict(d) for d in dicts]).astype(np.float64)
            for name in frame.columns:
                out[f"{group}.{name}"] = frame[name].to_numpy()
    return out


def trades_frame(trades: Iterable[TradeResult]) -> pd.DataFrame:
    """The trade journal of a sequence of :class:`~envs.events.TradeResult` (with snapshot columns)."""
    items = list(trades)
    rows = [
        (
            t.trade_id,
            t.symbol,
            str(t.side),
            t.entry_time_ns,
            t.exit_time_ns,
            t.entry_price,
            t.exit_price,
            t.quantity,
            t.fees,
            t.pnl,
            t.return_pct,
            t.duration_bars,
            t.exit_reason,
        )
        for t in items
    ]
    frame = trades_from_columns(list(zip(*rows, strict=False)) if rows else [() for _ in TRADE_COLUMNS])
    snapshot = _snapshot_columns(items)
    if snapshot:
        frame = pd.concat([frame, pd.DataFrame(snapshot, index=frame.index)], axis=1)
    return frame


def trades_from_columns(columns: list[Any]) -> pd.DataFrame:
    """The trade journal from one sequence per :data:`TRADE_COLUMNS` entry (times as epoch ns)."""
    data = dict(zip(TRADE_COLUMNS, columns, strict=True))
    return pd.DataFrame(
        {
            "trade_id": pd.array(data["trade_id"], dtype="str"),
            "symbol": pd.array(data["symbol"], dtype="str"),
            "side": pd.array(data["side"], dtype="str"),
            "entry_time": _utc(data["entry_time"]),
            "exit_time": _utc(data["exit_time"]),
            "entry_price": np.asarray(data["entry_price"], dtype=np.float64),
            "exit_price": np.asarray(data["exit_price"], dtype=np.float64),
            "quantity": np.asarray(data["quantity"], dtype=np.float64),
            "fees": np.asarray(data["fees"], dtype=np.float64),
            "pnl": np.asarray(data["pnl"], dtype=np.float64),
            "return_pct": np.asarray(data["return_pct"], dtype=np.float64),
            "duration_bars": np.asarray(data["duration_bars"], dtype=np.int64),
            "exit_reason": pd.array(data["exit_reason"], dtype="str"),
        }
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.Timestamp | pd.Timedelta):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


@dataclass
class BacktestResult:
    """Equity curve, positions, orders, trades and metrics of one backtest (see the module docstring).

    Attributes:
        curve: per-bar table (:data:`CURVE_COLUMNS`), indexed by bar open time (UTC).
        orders: every order (:data:`ORDER_COLUMNS`).
        trades: the trade journal (:data:`TRADE_COLUMNS`).
        meta: what produced the result: at least ``name`` and ``engine``; ``symbol``, ``spec``,
            ``portfolio``, ``rebalance_band``, ``borrow_paid``, ``calendar`` ... when known.
    """

    curve: pd.DataFrame
    orders: pd.DataFrame
    trades: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)
    _metrics: Metrics | None = field(default=None, repr=False)

    # --- views -------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return str(self.meta.get("name", "backtest"))

    @property
    def equity(self) -> pd.Series:
        """Equity at each bar's close."""
        return self.curve["equity"]

    @property
    def positions(self) -> pd.Series:
        """Signed base-quantity position at each bar's close."""
        return self.curve["position"]

    @property
    def returns(self) -> pd.Series:
        """Simple bar-to-bar returns of the equity (one fewer than bars)."""
        e = self.curve["equity"]
        return (e / e.shift(1) - 1.0).iloc[1:]

    def _by_status(self, status: OrderStatus) -> pd.DataFrame:
        return self.orders[self.orders["status"] == str(status)].reset_index(drop=True)

    @property
    def fills(self) -> pd.DataFrame:
        return self._by_status(OrderStatus.FILLED)

    @property
    def rejections(self) -> pd.DataFrame:
        """Orders the exchange's rules refused (lot size, minimum notional, balance)."""
        return self._by_status(OrderStatus.REJECTED)

    @property
    def errors(self) -> pd.DataFrame:
        """Orders that failed on the way (injected rate limits, timeouts, maintenance)."""
        return self._by_status(OrderStatus.ERRORED)

    @property
    def metrics(self) -> Metrics:
        """The metrics table (computed once, on first use; ``meta['calendar']`` overrides detection)."""
        if self._metrics is None:
            calendar: Calendar | str | None = self.meta.get("calendar")
            self._metrics = compute_metrics(
                self.curve["equity"],
                positions=self.curve["position"],
                fills=self.fills,
                trades=self.trades,
                borrow_paid=float(self.meta.get("borrow_paid", 0.0)),
                timeframe=self.meta.get("timeframe"),
                calendar=calendar,
            )
        return self._metrics

    def summary(self) -> str:
        """The metrics as aligned ``label: value`` lines."""
        rows = self.metrics.rows()
        width = max(len(label) for label, _ in rows)
        return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)

    # --- persistence -------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write the result into ``directory`` (created if needed); returns the directory."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        curve = self.curve.copy()
        curve.index.name = "timestamp"
        curve.to_parquet(out / _FILES["curve"])
        self.orders.to_parquet(out / _FILES["orders"], index=False)
        self.trades.to_parquet(out / _FILES["trades"], index=False)
        self.trades.to_csv(out / _FILES["journal"], index=False, date_format="%Y-%m-%dT%H:%M:%S.%fZ")
        _write_json(out / _FILES["metrics"], self.metrics.to_dict())
        _write_json(out / _FILES["meta"], self.meta)
        return out

    @classmethod
    def load(cls, directory: str | Path) -> BacktestResult:
        """Read a result written by :meth:`save`.

        Raises:
            StateError: the directory or one of its files is missing or unreadable.
        """
        src = Path(directory)
        missing = [name for name in _FILES.values() if not (src / name).is_file()]
        if missing:
            raise StateError(
                f"not a saved backtest: missing {', '.join(missing)}",
                where=str(src),
                fix="point to a directory written by BacktestResult.save",
            )
        try:
            curve = pd.read_parquet(src / _FILES["curve"])
            orders = pd.read_parquet(src / _FILES["orders"])
            trades = pd.read_parquet(src / _FILES["trades"])
            metrics = Metrics.from_dict(json.loads((src / _FILES["metrics"]).read_text(encoding="utf-8")))
            meta = json.loads((src / _FILES["meta"]).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise StateError(
                f"cannot read the saved backtest: {exc}", where=str(src), fix="re-run the backtest"
            ) from exc
        return cls(curve=curve, orders=orders, trades=trades, meta=meta, _metrics=metrics)

    # --- construction ------------------------------------------------------------------------------
    @classmethod
    def from_events(
        cls,
        *,
        times_ns: npt.ArrayLike,
        open_: npt.ArrayLike,
        close: npt.ArrayLike,
        target: npt.ArrayLike,
        position: npt.ArrayLike,
        cash: npt.ArrayLike,
        equity: npt.ArrayLike,
        orders: Iterable[OrderResult],
        trades: Iterable[TradeResult],
        meta: Mapping[str, Any],
    ) -> BacktestResult:
        """Assemble a result from per-bar arrays and event records (the env loops use this)."""
        curve = pd.DataFrame(
            {
                "open": np.asarray(open_, dtype=np.float64),
                "close": np.asarray(close, dtype=np.float64),
                "target": np.asarray(target, dtype=np.float64),
                "position": np.asarray(position, dtype=np.float64),
                "cash": np.asarray(cash, dtype=np.float64),
                "equity": np.asarray(equity, dtype=np.float64),
            },
            index=_utc(times_ns).rename("timestamp"),
        )
        return cls(curve=curve, orders=orders_frame(orders), trades=trades_frame(trades), meta=dict(meta))


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    # NaN/inf are written as JSON's NaN/Infinity extensions: Python's json reads them back as floats.
    text = json.dumps(data, indent=2, sort_keys=True, default=_json_default, allow_nan=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text + "\n", encoding="utf-8")
    tmp.replace(path)  # atomic: a crash leaves the previous file or the new one, never half of one
