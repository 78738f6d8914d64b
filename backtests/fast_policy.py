"""A trained SB3 MLP policy as pure NumPy, and backtest loops over :class:`~envs.replay.MarketReplayEnv`.

:func:`export_policy` copies the deterministic forward pass of a Stable-Baselines3 model into a
:class:`NumpyPolicy` (weights as float32 arrays, the model's own activations):

* PPO / A2C (``MlpPolicy``): ``mlp_extractor.policy_net`` then ``action_net``; ``argmax`` of the logits
  for ``Discrete``, the Gaussian mean clipped to the action bounds for ``Box`` (as ``predict`` does);
* DQN: ``q_net`` and ``argmax``; QR-DQN: ``quantile_net``, the mean over quantiles, ``argmax``.

Anything else (CNN or dict observations, LSTM policies, MaskablePPO's masks, gSDE or squashed
outputs, custom modules) is refused with a :class:`~envs.errors.ConfigError` that points to the slow
path, :func:`run_policy`, which calls ``model.predict(obs, deterministic=True)`` every bar.

:func:`run_policy_fast` runs the exported policy over the env. The observation is the window of
feature rows ending at the decision bar plus three account-state values, so the first layer splits
into ``W_window @ window(t) + W_state @ state + b``: the window part of every decision row is computed
up front in a few large matrix products, and only the three-column state part is added per step. While
flat the state is zero, so those rows' actions are computed up front in one batch too. Both loops step
the same env (same orders, fills, trades and learned-state hooks) and record the same
:class:`~backtests.results.BacktestResult`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np
import numpy.typing as npt

from backtests.metrics import Calendar
from backtests.results import BacktestResult
from envs.errors import ConfigError
from envs.events import OrderResult, TradeResult
from envs.replay import DEFAULT_CLIP, STATE_FEATURES, MarketReplayEnv

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm

__all__ = [
    "NumpyPolicy",
    "PredictFn",
    "export_policy",
    "run_policy",
    "run_policy_fast",
]

Head = Literal["categorical", "gaussian", "q_values", "quantiles"]
Activation = Literal["tanh", "relu", "identity"]
PredictFn = Callable[..., tuple[Any, Any]]
"""Anything with SB3's ``predict(obs, state=None, episode_start=None, deterministic=True)`` signature."""

_SLOW_PATH: Final = (
    "evaluate it with backtests.fast_policy.run_policy(model, env), which calls "
    "model.predict(obs, deterministic=True) each bar"
)
_ROW_CHUNK: Final = 4_096  # decision rows per first-layer matrix product (bounds the window copy)


def _act(x: npt.NDArray[np.float32], kind: str) -> npt.NDArray[np.float32]:
    if kind == "tanh":
        return np.tanh(x)
    if kind == "relu":
        return np.maximum(x, np.float32(0.0))
    return x


def _relu_inplace(x: npt.NDArray[np.float32], out: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return np.maximum(x, np.float32(0.0), out=out)


@dataclass(frozen=True, eq=False)
class NumpyPolicy:
    """The deterministic forward pass of an exported SB3 policy.

    Attributes:
        algo: the SB3 class name (``"PPO"``, ``"DQN"`` ...).
        head: how outputs become actions: ``categorical`` (argmax of logits), ``gaussian`` (mean,
            clipped), ``q_values`` (argmax), ``quantiles`` (argmax of the mean over quantiles).
        weights: ``(out, in)`` float32 matrix of every linear layer, input to output.
        biases: float32 bias of every linear layer.
        activations: activation after every linear layer (``identity`` after the last).
        obs_dim: observation length.
        n_actions: number of discrete actions, or the action vector length for ``gaussian``.
        n_quantiles: quantiles per action (``quantiles`` head only).
        low, high: action bounds (``gaussian`` head only).
    """

    algo: str
    head: Head
    weights: tuple[npt.NDArray[np.float32], ...]
    biases: tuple[npt.NDArray[np.float32], ...]
    activations: tuple[Activation, ...]
    obs_dim: int
    n_actions: int
    n_quantiles: int = 0
    low: npt.NDArray[np.float32] | None = None
    high: npt.NDArray[np.float32] | None = None

    @property
    def discrete(self) -> bool:
        return self.head != "gaussian"

    def outputs(self, obs: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """Logits, Gaussian means, Q-values or mean quantiles, shape ``(batch, n_actions)``."""
        x = np.asarray(obs, dtype=np.float32).reshape(-1, self.obs_dim)
        return self._from_hidden(x, 0)

    def _from_hidden(self, x: npt.NDArray[np.float32], first: int) -> npt.NDArray[np.float32]:
        """Run layers ``first..`` on ``x`` (the input of layer ``first``), then the head's reduction."""
        for w, b, act in zip(
            self.weights[first:], self.biases[first:], self.activations[first:], strict=True
        ):
            x = _act(x @ w.T + b, act)
        if self.head == "quantiles":
            # QR-DQN views the output as (batch, n_quantiles, n_actions) and averages the quantiles.
            x = x.reshape(-1, self.n_quantiles, self.n_actions).mean(axis=1)
        return x

    def _actions(self, out: npt.NDArray[np.float32]) -> npt.NDArray[Any]:
        if self.head == "gaussian":
            return np.clip(out, self.low, self.high)
        return out.argmax(axis=1)

    def predict(
        self,
        observation: npt.ArrayLike,
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = True,
    ) -> tuple[npt.NDArray[Any], Any]:
        """SB3-style deterministic prediction (one observation or a batch)."""
        obs = np.asarray(observation, dtype=np.float32)
        actions = self._actions(self.outputs(obs))
        if obs.ndim == 1:
            return actions[0], state
        return actions, state


# --- export ----------------------------------------------------------------------------------------


def _refuse(what: str) -> ConfigError:
    return ConfigError(f"cannot export this policy to NumPy: {what}", where="fast_policy", fix=_SLOW_PATH)


def _mlp(
    modules: Any, what: str
) -> tuple[list[npt.NDArray[np.float32]], list[npt.NDArray[np.float32]], list[str]]:
    """Linear layers and activations of an ``nn.Sequential`` (or an empty one), refusing anything else."""
    from torch import nn

    weights: list[npt.NDArray[np.float32]] = []
    biases: list[npt.NDArray[np.float32]] = []
    acts: list[str] = []
    for module in modules:
        if isinstance(module, nn.Linear):
            if len(weights) > len(acts):
                acts.append("identity")
            weights.append(module.weight.detach().cpu().numpy().astype(np.float32, copy=True))
            bias = module.bias
            out_dim = module.out_features
            biases.append(
                np.zeros(out_dim, np.float32)
                if bias is None
                else bias.detach().cpu().numpy().astype(np.float32, copy=True)
            )
        elif isinstance(module, nn.Tanh | nn.ReLU) and len(weights) == len(acts) + 1:
            acts.append("tanh" if isinstance(module, nn.Tanh) else "relu")
        else:
            raise _refuse(f"{what} holds a {type(module).__name__} (only Linear + Tanh/ReLU are exported)")
    if len(weights) > len(acts):
        acts.append("identity")
    return weights, biases, acts


def export_policy(model: BaseAlgorithm) -> NumpyPolicy:
    """Copy a PPO, A2C, DQN or QR-DQN MLP policy's deterministic forward pass into NumPy.

    Raises:
        ConfigError: the policy is not one of those (see the module docstring), naming the slow path.
    """
    from gymnasium import spaces
    from stable_baselines3.common.distributions import CategoricalDistribution, DiagGaussianDistribution
    from stable_baselines3.common.policies import ActorCriticPolicy
    from stable_baselines3.common.torch_layers import FlattenExtractor, MlpExtractor
    from stable_baselines3.dqn.policies import DQNPolicy

    policy = getattr(model, "policy", None)
    algo = type(model).__name__
    if policy is None:
        raise _refuse(f"{algo} has no .policy")
    obs_space = policy.observation_space
    if not isinstance(obs_space, spaces.Box) or len(obs_space.shape) != 1:
        raise _refuse(
            f"observations are {obs_space}, not a flat Box (CNN and dict policies are not exported)"
        )
    obs_dim = int(obs_space.shape[0])
    action_space = policy.action_space
    if any(hasattr(policy, name) for name in ("lstm_actor", "lstm_critic")):
        raise _refuse(f"{type(policy).__name__} is recurrent (LSTM)")
    if type(policy).__name__.startswith("Maskable"):
        raise _refuse("MaskablePPO chooses among the env's action masks")

    layers: tuple[list[Any], list[Any], list[str]]
    n_quantiles = 0
    low = high = None
    if isinstance(policy, ActorCriticPolicy):
        extractor = (
            policy.features_extractor if policy.share_features_extractor else policy.pi_features_extractor
        )
        if not isinstance(extractor, FlattenExtractor) or not isinstance(policy.mlp_extractor, MlpExtractor):
            raise _refuse(f"custom feature extractor {type(extractor).__name__}")
        if policy.squash_output or policy.use_sde:
            raise _refuse("gSDE / squashed outputs")
        body = _mlp(policy.mlp_extractor.policy_net, "mlp_extractor.policy_net")
        head = _mlp([policy.action_net], "action_net")
        layers = (body[0] + head[0], body[1] + head[1], body[2] + head[2])
        if isinstance(policy.action_dist, CategoricalDistribution) and isinstance(
            action_space, spaces.Discrete
        ):
            kind: Head = "categorical"
            n_actions = int(action_space.n)
        elif isinstance(policy.action_dist, DiagGaussianDistribution) and isinstance(
            action_space, spaces.Box
        ):
            kind = "gaussian"
            n_actions = int(np.prod(action_space.shape))
            low = np.asarray(action_space.low, dtype=np.float32).reshape(-1)
            high = np.asarray(action_space.high, dtype=np.float32).reshape(-1)
        else:
            raise _refuse(f"action distribution {type(policy.action_dist).__name__}")
    elif isinstance(policy, DQNPolicy):
        net = policy.q_net
        if not isinstance(net.features_extractor, FlattenExtractor):
            raise _refuse(f"custom feature extractor {type(net.features_extractor).__name__}")
        layers = _mlp(net.q_net, "q_net")
        kind = "q_values"
        n_actions = int(action_space.n)
    elif type(policy).__name__ == "QRDQNPolicy":
        net = policy.quantile_net
        if not isinstance(net.features_extractor, FlattenExtractor):
            raise _refuse(f"custom feature extractor {type(net.features_extractor).__name__}")
        layers = _mlp(net.quantile_net, "quantile_net")
        kind = "quantiles"
        n_actions = int(action_space.n)
        n_quantiles = int(net.n_quantiles)
    else:
        raise _refuse(
            f"{algo} with {type(policy).__name__} (PPO, A2C, DQN and QR-DQN MLP policies are exported)"
        )

    weights, biases, acts = layers
    if not weights or weights[0].shape[1] != obs_dim:
        raise _refuse("the first layer does not read the observation")
    return NumpyPolicy(
        algo=algo,
        head=kind,
        weights=tuple(weights),
        biases=tuple(biases),
        activations=tuple(acts),  # type: ignore[arg-type]
        obs_dim=obs_dim,
        n_actions=n_actions,
        n_quantiles=n_quantiles,
        low=low,
        high=high,
    )


# --- backtest loops --------------------------------------------------------------------------------


class _Recorder:
    """Collects what every step of the env reported into a :class:`BacktestResult`."""

    __slots__ = ("cash", "env", "equity", "orders", "position", "rows", "targets", "trades")

    def __init__(self, env: MarketReplayEnv, info: dict[str, Any]) -> None:
        self.env = env
        self.rows = [env.row]
        self.equity = [info["equity"]]
        self.position = [info["position"]]
        self.cash = [info["cash"]]
        self.targets: list[float] = []
        self.orders: list[OrderResult] = []
        self.trades: list[TradeResult] = []

    def step(self, target: float, info: dict[str, Any]) -> None:
        self.targets.append(target)
        self.rows.append(self.env.row)
        self.equity.append(info["equity"])
        self.position.append(info["position"])
        self.cash.append(info["cash"])
        if info["orders"]:
            self.orders.extend(info["orders"])
        if info["trades"]:
            self.trades.extend(info["trades"])

    def result(self, name: str, engine: str, extra: dict[str, Any]) -> BacktestResult:
        env = self.env
        md = env.market_data
        rows = np.asarray(self.rows, dtype=np.int64)
        book = env.core.portfolio
        meta = {
            "name": name,
            "engine": engine,
            "symbol": env.symbol,
            "spec": env.market_spec.to_dict(),
            "portfolio": asdict(book.config),
            "rebalance_band": env.core.band,
            "borrow_paid": book.borrow_paid,
            "start_row": int(rows[0]),
            **extra,
        }
        return BacktestResult.from_events(
            times_ns=md.time_ns[rows],
            open_=md.open[rows],
            close=md.close[rows],
            target=[*self.targets, math.nan],
            position=self.position,
            cash=self.cash,
            equity=self.equity,
            orders=self.orders,
            trades=self.trades,
            meta=meta,
        )


def _calendar(calendar: Calendar | None) -> dict[str, Any]:
    return {} if calendar is None else {"calendar": calendar}


def _reset(env: MarketReplayEnv, start: int | None, seed: int | None) -> tuple[Any, dict[str, Any]]:
    return env.reset(seed=seed, options=None if start is None else {"start": start})


def run_policy(
    model: Any,
    env: MarketReplayEnv,
    *,
    start: int | None = None,
    seed: int | None = None,
    name: str | None = None,
    calendar: Calendar | None = None,
) -> BacktestResult:
    """Backtest any SB3-style policy (a model, a baseline, a :class:`NumpyPolicy`) over one episode.

    Calls ``model.predict(obs, deterministic=True)`` at every bar: the reference loop, and the path for
    policies :func:`export_policy` refuses.

    Args:
        model: anything with SB3's ``predict``.
        env: the evaluation env (its span, costs and hooks are the backtest's).
        start: first decision row (default: the env's first, or a random one with ``episode_length``).
        seed: reset seed.
        name: label of the result (default: the policy's ``name`` attribute, else its class name).
        calendar: annualization calendar of the metrics (detected from the bars when ``None``).
    """
    obs, info = _reset(env, start, seed)
    rec = _Recorder(env, info)
    predict = model.predict
    done = False
    while not done:
        action, _ = predict(obs, deterministic=True)
        target = env.target_of(action)
        obs, _, terminated, truncated, info = env.step(action)
        rec.step(target, info)
        done = terminated or truncated
    label = name or str(getattr(model, "name", "") or type(model).__name__)
    return rec.result(label, "predict", {"policy": repr(model)[:200], **_calendar(calendar)})


class _FirstLayer:
    """The window part of the first layer, ``W_window @ window(t) + b``, computed in row chunks on demand.

    One matrix product per chunk of decision rows instead of one per step; chunks are made as the
    episode reaches them, so a short replay span of a long dataset costs only its own rows. The actions
    of flat rows (account state zero) are computed for the whole chunk at once.
    """

    def __init__(self, policy: NumpyPolicy, env: MarketReplayEnv) -> None:
        md = env.market_data
        clip = float(np.asarray(getattr(env.observation_space, "high", DEFAULT_CLIP)).reshape(-1)[0])
        # The same normalized, clipped matrix the env observes (cached per normalization on the data).
        flat, _ = md.observations(env.normalization, (0, len(md)), clip)
        k = len(md.features.columns)
        self.window = env.window
        self.n_rows = len(md)
        self.windows = np.lib.stride_tricks.sliding_window_view(flat, env.window * k)[::k]
        self.w = policy.weights[0][:, : env.window * k]
        self.b = policy.biases[0]
        self.policy = policy
        self.lo = 0
        self.z = np.empty((0, self.w.shape[0]), dtype=np.float32)
        self.flat_actions: list[Any] = []

    def load(self, row: int) -> None:
        """Compute the chunk of decision rows starting at ``row``."""
        hi = min(row + _ROW_CHUNK, self.n_rows)
        block = np.ascontiguousarray(self.windows[row - self.window + 1 : hi - self.window + 1])
        self.z = block @ self.w.T + self.b
        pol = self.policy
        actions = pol._actions(pol._from_hidden(_act(self.z, pol.activations[0]), 1))
        # Python ints for discrete actions: the env converts them cheaper than NumPy scalars.
        self.flat_actions = actions.tolist() if pol.discrete else list(actions)
        self.lo = row


def run_policy_fast(
    policy: NumpyPolicy | BaseAlgorithm,
    env: MarketReplayEnv,
    *,
    start: int | None = None,
    seed: int | None = None,
    name: str | None = None,
    calendar: Calendar | None = None,
) -> BacktestResult:
    """:func:`run_policy` for an exported policy, >= 10x faster (see the module docstring).

    Takes a :class:`NumpyPolicy` or an SB3 model (exported first). The env must be a bare
    :class:`MarketReplayEnv` whose observations the policy was trained on.

    Raises:
        ConfigError: the policy cannot be exported, or its input does not match the env's observation.
    """
    pol = policy if isinstance(policy, NumpyPolicy) else export_policy(policy)
    if not isinstance(env, MarketReplayEnv):
        raise ConfigError(
            f"run_policy_fast needs a MarketReplayEnv, got {type(env).__name__}",
            where="env",
            fix="pass the unwrapped replay env, or use run_policy for wrapped envs",
        )
    obs_dim = int(env.observation_space.shape[0])  # type: ignore[index]
    if pol.obs_dim != obs_dim:
        raise ConfigError(
            f"the policy reads {pol.obs_dim} values, the env observes {obs_dim}",
            where="policy",
            fix="evaluate on an env built like the training env (same features, window, wrappers)",
        )
    from threadpoolctl import threadpool_limits

    # One BLAS thread: the per-step products are tiny, and idle BLAS threads spinning between them
    # take the cores the env loop needs (measured: ~30% slower with the default thread pool).
    with threadpool_limits(limits=1, user_api="blas"):
        result = _fast_loop(pol, env, start, seed, name)
    result.meta.update(_calendar(calendar))
    return result


def _fast_loop(
    pol: NumpyPolicy, env: MarketReplayEnv, start: int | None, seed: int | None, name: str | None
) -> BacktestResult:
    obs_dim = int(env.observation_space.shape[0])  # type: ignore[index]
    wk = obs_dim - len(STATE_FEATURES)
    obs, info = _reset(env, start, seed)
    layer = _FirstLayer(pol, env)
    layer.load(env.row)
    w_state = pol.weights[0][:, wk:]
    act0 = pol.activations[0]
    direct = _act(obs @ pol.weights[0].T + pol.biases[0], act0)
    if not np.allclose(_act(layer.z[0] + w_state @ obs[wk:], act0), direct, atol=1e-4):
        raise ConfigError(
            "the env's observation differs from the window + account state the fast path assumes",
            where="env",
            fix="use run_policy for this env",
        )
    rec = _Recorder(env, info)
    target_of = env.target_of
    step = env.step
    # Per-step layers as (weight, bias, in-place activation) with preallocated outputs: each layer is
    # three NumPy calls on small vectors, no temporaries.
    buffers = [np.empty(w.shape[0], dtype=np.float32) for w in pol.weights]
    inplace: dict[str, Callable[..., Any] | None] = {"tanh": np.tanh, "relu": _relu_inplace, "identity": None}
    layers = [
        (w, b, inplace[a], out)
        for w, b, a, out in zip(
            pol.weights[1:], pol.biases[1:], pol.activations[1:], buffers[1:], strict=True
        )
    ]
    act_first = inplace[act0]
    h0 = buffers[0]
    head = pol.head
    low, high = pol.low, pol.high
    n_q, n_a = pol.n_quantiles, pol.n_actions
    done = False
    while not done:
        row = env.row
        i = row - layer.lo
        if i >= _ROW_CHUNK:
            layer.load(row)
            i = 0
        # Flat (or wiped out) <=> the three account-state values are exactly 0.
        if obs.item(wk) == 0.0 and obs.item(wk + 2) == 0.0 and obs.item(wk + 1) == 0.0:
            action: Any = layer.flat_actions[i]
        else:
            np.dot(w_state, obs[wk:], out=h0)
            h0 += layer.z[i]
            if act_first is not None:
                act_first(h0, out=h0)
            h = h0
            for w, b, act, out in layers:
                np.dot(w, h, out=out)
                out += b
                if act is not None:
                    act(out, out=out)
                h = out
            if head == "gaussian":
                action = np.clip(h, low, high)
            elif head == "quantiles":
                action = int(h.reshape(n_q, n_a).mean(axis=0).argmax())
            else:
                action = int(h.argmax())
        target = target_of(action)
        obs, _, terminated, truncated, info = step(action)
        rec.step(target, info)
        done = terminated or truncated
    return rec.result(name or pol.algo, "numpy", {"policy": f"{pol.algo} ({pol.head}, numpy export)"})
