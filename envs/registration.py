"""Registers this package's Gymnasium environments (Gymnasium 1.x has no plugin entry points).

Importing this module registers ``slf/MarketReplay-v0`` once; ``envs/__init__.py`` imports it, so
``import envs; gymnasium.make("slf/MarketReplay-v0", dataset="eurusd_1h")`` works.
"""

from __future__ import annotations

import gymnasium as gym

from envs.replay import ENV_ID

__all__ = ["ENV_ID", "register_envs"]

_ENTRY_POINT = "envs.replay:MarketReplayEnv"


def register_envs() -> None:
    """Register the environments; a no-op when they are registered already (no override warning)."""
    if ENV_ID not in gym.registry:
        # Episode length and truncation are the env's own (episode_length=); no TimeLimit wrapper.
        gym.register(id=ENV_ID, entry_point=_ENTRY_POINT, nondeterministic=False)


register_envs()
