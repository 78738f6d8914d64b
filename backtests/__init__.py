"""Backtests: running a policy or a baseline over a data split, and judging the outcome honestly.

* :mod:`backtests.vectorized`: rule baselines (target-position series) through the same accounting as
  :class:`envs.core.TradingCore`, looping only over the bars where an order can happen.
* :mod:`backtests.fast_policy`: a trained SB3 MLP policy exported to NumPy, and backtest loops over
  :class:`envs.replay.MarketReplayEnv` (the fast one and the ``model.predict`` reference).
* :mod:`backtests.results`: :class:`~backtests.results.BacktestResult` (equity, positions, orders,
  fills, rejections, trade journal, metrics), saved to and loaded from a directory.
* :mod:`backtests.metrics`: performance metrics (empyrical-reloaded) annualized by bar timeframe and
  market calendar.
* :mod:`backtests.stats`: confidence intervals over seeds, probabilistic and deflated Sharpe ratios,
  significance against buy-and-hold.
* :mod:`backtests.plots` and :mod:`backtests.report`: PNG plots and one self-contained HTML report.

The package imports nothing heavy on import: torch and Stable-Baselines3 are imported inside the
functions that need them, matplotlib and scipy/empyrical likewise. Imports flow one way:
``backtests`` may use ``envs``, ``learning`` and ``agents``, never ``experiments``.
See the README section "Accounting conventions" for the conventions every engine here shares.
"""
