"""The learning manager beside an SB3 policy: one import for the switches, wrappers, hook and callback.

* :class:`~agents.switches.LearningSwitches`: which effects apply (for ablations).
* :func:`~agents.wrappers.wrap_env`, :class:`~agents.wrappers.LearningManagerWrapper`,
  :class:`~agents.wrappers.LearnedFeaturesObservation`: the environment side (apply a snapshot, emit
  events).
* :class:`~agents.hooks.LearnedOrderHook`: the snapshot applied to every order.
* :class:`~agents.feeder.ManagerFeeder`: the main-process side without any framework (feed the manager
  from each step's ``infos``, judge vetoes, push snapshots through a callable).
* :class:`~agents.callbacks.LearningCallback`: the feeder as an SB3 callback (also logs ``learning/*``
  and ``trading/*`` to TensorBoard).
* :class:`~agents.experience_clock.ExperiencedMarketClock`: the manager's market time in training.
"""

from agents.callbacks import DEFAULT_VETO_HORIZON, EpisodeTracker, LearningCallback, veto_would_have_won
from agents.experience_clock import ExperiencedMarketClock
from agents.feeder import ManagerFeeder
from agents.hooks import HookEvent, HookReason, LearnedOrderHook
from agents.switches import LearningSwitches
from agents.wrappers import (
    INFO_CONDITIONS,
    INFO_EVENTS,
    INFO_VERSION,
    LEARNED_FEATURES,
    LearnedFeaturesObservation,
    LearningManagerWrapper,
    wrap_env,
)

__all__ = [
    "DEFAULT_VETO_HORIZON",
    "INFO_CONDITIONS",
    "INFO_EVENTS",
    "INFO_VERSION",
    "LEARNED_FEATURES",
    "EpisodeTracker",
    "ExperiencedMarketClock",
    "HookEvent",
    "HookReason",
    "LearnedFeaturesObservation",
    "LearnedOrderHook",
    "LearningCallback",
    "LearningManagerWrapper",
    "LearningSwitches",
    "ManagerFeeder",
    "veto_would_have_won",
    "wrap_env",
]
