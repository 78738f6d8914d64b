"""The market side: data, features, the simulated exchange, the portfolio, the trading core and the
Gymnasium market-replay environment. Importing this package never imports torch or SB3."""

from envs.clock import Clock, MarketClock
from envs.errors import BrokerError, ConfigError, DataError, RetryableBrokerError, SlfError, StateError
from envs.events import BarEvent, ErrorEvent, ErrorKind, OrderResult, OrderStatus, Side, TradeResult

__all__ = [
    "BarEvent",
    "BrokerError",
    "Clock",
    "ConfigError",
    "DataError",
    "ErrorEvent",
    "ErrorKind",
    "MarketClock",
    "OrderResult",
    "OrderStatus",
    "RetryableBrokerError",
    "Side",
    "SlfError",
    "StateError",
    "TradeResult",
]
