"""Switches that turn each effect of the learning manager on or off, for ablations.

Every switch removes its effect entirely: with a switch off, the environment behaves exactly as if the
learned state held nothing of that kind (the tests in ``tests/agents`` check each one). With
``enabled=False`` there is no manager, no wrapper and no feeding at all: the control arm of an ablation.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from envs.errors import ConfigError

__all__ = ["LearningSwitches"]


class LearningSwitches(BaseModel):
    """Which parts of the learning manager act on training and trading.

    Build from a mapping with :meth:`from_mapping` to get a :class:`~envs.errors.ConfigError` with a
    "did you mean" hint for misspelled keys.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(
        default=True,
        description="False: no manager, no wrapper, nothing fed or applied (the ablation's control arm); "
        "trading/* metrics are still logged.",
    )
    online: bool = Field(
        default=True,
        description="The manager keeps learning during the run (trades, errors, vetoes, periodic work, "
        "new snapshots pushed to the envs). False: one given snapshot is applied, frozen.",
    )
    vetoes: bool = Field(
        default=True,
        description="Active avoidance rules veto entries (opening, adding, the new side of a reversal) "
        "whose entry features hit them, for any algorithm; exits are never vetoed.",
    )
    action_masks: bool = Field(
        default=True,
        description="action_masks() masks the discrete actions a rule would veto (for MaskablePPO); "
        "needs vetoes=True, never masks the current position's action.",
    )
    learned_minimums: bool = Field(
        default=True,
        description="Orders below the learned minimum are resized up to it when affordable in the "
        "target's direction, else skipped.",
    )
    condition_adjustments: bool = Field(
        default=True,
        description="Market-condition adjustments apply to entries: exposure multiplier on the target, "
        "entry threshold on opening, max position cap.",
    )
    error_resolutions: bool = Field(
        default=True,
        description="The manager chooses a resolution for every exchange error, the env applies it "
        "(pause entries, smaller next order; resizing comes with learned_minimums) and the next "
        "attempt's outcome is recorded. False: errors are still learned, no resolution is tried.",
    )
    observation_features: bool = Field(
        default=False,
        description="Append learned features to the observation (signal weight, vetoing rules, "
        "exposure multiplier, entry threshold, max position, pattern score, paused).",
    )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, where: str = "learning switches") -> LearningSwitches:
        """Validate a mapping (e.g. a YAML section), raising ``ConfigError`` that names the bad key."""
        known = sorted(cls.model_fields)
        for key in data:
            if key not in cls.model_fields:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(known)}"
                raise ConfigError(f"unknown switch {key!r}", where=where, fix=hint)
        try:
            return cls(**dict(data))
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"]) or "(model)"
            raise ConfigError(f"{loc}: {first['msg']}", where=where, fix="give true or false") from exc
