"""The market side: data, features, the simulated exchange, the portfolio, the trading core and the
Gymnasium market-replay environment.

Importing this package registers ``slf/MarketReplay-v0`` with Gymnasium, so
``import envs; gymnasium.make("slf/MarketReplay-v0", dataset="eurusd_1h")`` works. It never imports
torch or Stable-Baselines3.
"""

from envs import _native

_native.select()  # compiled trading core, or its pure-Python sources when stale or switched off

import envs.registration  # noqa: F401  (registers slf/MarketReplay-v0)
from envs.broker import Broker, FaultConfig, OrderIntent, Quote, SimBroker
from envs.clock import Clock, MarketClock
from envs.core import OrderHook, OrderProposal, StepResult, TradingCore
from envs.errors import BrokerError, ConfigError, DataError, RetryableBrokerError, SlfError, StateError
from envs.events import BarEvent, ErrorEvent, ErrorKind, OrderResult, OrderStatus, Side, TradeResult
from envs.market import MarketSpec, SlippageModel
from envs.portfolio import Portfolio, PortfolioConfig, Transition
from envs.replay import ENV_ID, MarketReplayEnv

__all__ = [
    "ENV_ID",
    "BarEvent",
    "Broker",
    "BrokerError",
    "Clock",
    "ConfigError",
    "DataError",
    "ErrorEvent",
    "ErrorKind",
    "FaultConfig",
    "MarketClock",
    "MarketReplayEnv",
    "MarketSpec",
    "OrderHook",
    "OrderIntent",
    "OrderProposal",
    "OrderResult",
    "OrderStatus",
    "Portfolio",
    "PortfolioConfig",
    "Quote",
    "RetryableBrokerError",
    "Side",
    "SimBroker",
    "SlfError",
    "SlippageModel",
    "StateError",
    "StepResult",
    "TradeResult",
    "TradingCore",
    "Transition",
]
