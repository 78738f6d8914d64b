"""The compiled trading core and its pure-Python sources: same results bit for bit, and the right one runs.

``setup.py`` compiles ``envs/portfolio.py``, ``broker.py``, ``core.py`` and ``cursor.py`` when a C compiler
is there; ``envs._native`` falls back to the sources when the build is missing, stale or switched off.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from envs import _native

ROOT = Path(__file__).resolve().parents[2]


def rollout_digest(steps: int = 1500) -> str:
    """sha256 over every observation, reward, flag and info event of seeded rollouts in six configs
    that exercise every branch of the per-bar path (faults, impact, ticks, lots, leverage and borrow,
    shorts, long-only, drawdown stop, order hook resizes and vetoes, ruin, end-of-data close)."""
    from envs.data import generate_synthetic
    from envs.market import MarketSpec, SlippageModel
    from envs.replay import MarketReplayEnv

    bars = generate_synthetic(["BTC/USDT"], 4000, 11).frames["BTC/USDT"]
    spec = MarketSpec(
        "BTC/USDT",
        taker_fee=0.001,
        spread_bps=2.0,
        slippage_bps=1.0,
        slippage_model=SlippageModel.VOLUME,
        impact_bps=10.0,
        min_qty=1e-5,
        qty_step=1e-5,
        min_notional=5.0,
        price_tick=0.01,
    )
    fixed = MarketSpec(
        "BTC/USDT", taker_fee=0.001, spread_bps=2.0, slippage_bps=1.0, impact_bps=10.0, min_qty=1e-3,
        qty_step=1e-3, min_notional=50.0, price_tick=0.1,
    )  # fmt: skip
    faults = {"rate_limit": 0.02, "timeout": 0.02, "maintenance": 0.01}

    def hook(p):  # type: ignore[no-untyped-def]
        if p.qty * p.price > 9000:
            return p._replace(qty=p.qty * 0.5)
        if p.transition.value == "open" and p.side.value == "sell" and p.time_ns % 7 == 0:
            return None
        return p

    configs: list[dict[str, object]] = [
        {"market": spec, "faults": faults, "episode_length": 1000},
        {"market": spec, "actions": "continuous", "leverage": 2.0, "borrow_rate": 1e-5,
         "reward": "differential_sharpe", "episode_length": 800},
        {"market": fixed, "actions": [0, 0.5, 1], "allow_short": False, "max_drawdown": 0.05,
         "episode_length": 1500},
        {"market": spec, "order_hook": hook, "faults": faults, "episode_length": 700, "close_at_end": True},
        {"market": spec, "initial_cash": 60.0, "episode_length": 900},
        {"market": fixed, "start": 200, "end": 3000, "close_at_end": True},
    ]  # fmt: skip
    h = hashlib.sha256()
    for k, cfg in enumerate(configs):
        env = MarketReplayEnv(data=bars, window=16, **cfg)  # type: ignore[arg-type]
        rng = np.random.default_rng(k)
        obs, info = env.reset(seed=k)
        h.update(obs.tobytes())
        h.update(pickle.dumps(sorted(info.items()), protocol=4))
        for _ in range(steps):
            if env.continuous:
                action: object = rng.uniform(-1, 1, size=(1,)).astype(np.float32)
            else:
                action = int(rng.integers(0, env.action_space.n))  # type: ignore[attr-defined]
            obs, reward, terminated, truncated, info = env.step(action)
            h.update(obs.tobytes())
            h.update(np.float64(reward).tobytes())
            h.update(bytes([terminated, truncated]))
            h.update(repr(sorted(info.items())).encode())
            if terminated or truncated:
                obs, info = env.reset()
                h.update(obs.tobytes())
    return h.hexdigest()


def _run(code: str, **env: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout.strip().splitlines()[-1]


_DIGEST = "from envs import _native; from tests.envs.test_native import rollout_digest; "


def _compiler_present() -> bool:
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(cc) is not None


def test_the_compiled_core_is_built_and_runs_where_a_compiler_is_present() -> None:
    if not _compiler_present():
        pytest.skip("no C compiler: the pure-Python core is the only build here")
    assert _native.status() == "compiled", _native.status()
    import envs.core

    assert not envs.core.__file__.endswith(".py")


@pytest.mark.slow
def test_compiled_and_pure_python_rollouts_are_bit_identical() -> None:
    if not _native.compiled():
        pytest.skip(f"no compiled core to compare ({_native.status()})")
    code = _DIGEST + "print(_native.status(), rollout_digest())"
    compiled = _run(code)
    pure = _run(code, **{_native.PURE_ENV: "1"})
    assert compiled.split()[0] == "compiled"
    assert pure.startswith("pure:")
    assert compiled.split()[-1] == pure.split()[-1]


def test_slf_pure_python_switches_the_compiled_core_off() -> None:
    code = "import envs, envs.core, envs.cursor; print(envs.core.__file__, envs.cursor.__file__)"
    paths = _run(code, **{_native.PURE_ENV: "1"}).split()
    assert all(p.endswith(".py") for p in paths)


def _fake_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, built: bool) -> Path:
    pkg = tmp_path / "envs"
    pkg.mkdir()
    for module in _native.DIGESTED_MODULES:
        stem = module.split(".")[1]
        (pkg / f"{stem}.py").write_text(f"X = {stem!r}\n")
        (pkg / f"{stem}.pxd").write_text("cdef double X\n")
        if built and module in _native.COMPILED_MODULES:
            (pkg / f"{stem}{sysconfig.get_config_var('EXT_SUFFIX')}").write_bytes(b"\0")
    monkeypatch.setattr(_native, "_PACKAGE_DIR", pkg)
    monkeypatch.delenv(_native.PURE_ENV, raising=False)
    if built:
        record = {"modules": {m: _native.source_digest(m, tmp_path) for m in _native.DIGESTED_MODULES}}
        (pkg / _native.BUILD_RECORD).write_text(json.dumps(record))
    return pkg


def test_a_build_matching_its_sources_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_package(tmp_path, monkeypatch, built=True)
    assert _native._decide() == ("compiled", [])


@pytest.mark.parametrize("edited", ["core.py", "cursor.pxd", "_fast.pxd"])
def test_an_edited_source_makes_the_whole_core_run_from_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edited: str
) -> None:
    pkg = _fake_package(tmp_path, monkeypatch, built=True)
    with (pkg / edited).open("a") as fh:
        fh.write("# edited\n")
    build, stale = _native._decide()
    assert build.startswith("pure: the compiled build is older")
    assert stale == [f"envs.{Path(edited).stem}"]


def test_a_missing_record_or_module_counts_as_stale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = _fake_package(tmp_path, monkeypatch, built=True)
    (pkg / f"broker{sysconfig.get_config_var('EXT_SUFFIX')}").unlink()
    assert _native._decide()[1] == ["envs.broker"]
    (pkg / _native.BUILD_RECORD).unlink()
    assert _native._decide()[1] == list(_native.DIGESTED_MODULES)


def test_no_build_at_all_runs_the_sources_without_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_package(tmp_path, monkeypatch, built=False)
    build, stale = _native._decide()
    assert build.startswith("pure: not compiled")
    assert stale == []


def test_a_stale_build_warns_with_the_fix() -> None:
    """A subprocess whose build record disagrees with the sources: pure core, and a warning naming the
    fix (the record is faked by pointing the module at a copy of the package with an edited source)."""
    code = (
        "import json, shutil, sys, tempfile, warnings, pathlib\n"
        "root = pathlib.Path(tempfile.mkdtemp())\n"
        "shutil.copytree('envs', root / 'envs', ignore=shutil.ignore_patterns('__pycache__'))\n"
        "(root / 'envs' / 'core.py').write_text((root / 'envs' / 'core.py').read_text() + '# edited\\n')\n"
        "rec = root / 'envs' / '_native_build.json'\n"
        "if not rec.exists():\n"
        "    print('SKIP'); sys.exit()\n"
        "sys.path.insert(0, str(root))\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    import envs, envs.core\n"
        "print(envs.core.__file__.endswith('.py'), any('make setup' in str(w.message) for w in caught))\n"
    )
    out = _run(code)
    if out == "SKIP":
        pytest.skip("no compiled build in this checkout")
    assert out == "True True"


def test_records_and_observations_hold_no_stray_references() -> None:
    """The compiled allocation helpers take exactly the references they hand out: after thousands of
    steps whose events are dropped, the symbol string every record holds is referenced as before."""
    from envs.data import generate_synthetic
    from envs.replay import MarketReplayEnv

    bars = generate_synthetic(["ETH/USDT"], 3000, 5).frames["ETH/USDT"]
    env = MarketReplayEnv(data=bars, window=8, episode_length=2000, faults={"timeout": 0.05})
    env.reset(seed=0)
    symbol = env.symbol
    rng = np.random.default_rng(0)
    before = sys.getrefcount(symbol)
    events = 0
    for a in rng.integers(0, 3, 1500):
        obs, _, terminated, truncated, info = env.step(int(a))
        events += len(info["orders"]) + len(info["trades"])
        assert obs.flags.owndata
        assert obs.dtype == np.float32
        if terminated or truncated:
            env.reset()
    del obs, info
    assert events > 500
    assert sys.getrefcount(symbol) - before <= 4  # the env's current open trade, at most


# --- input outside the C types' range: the same clear error from both builds -------------------------------
# The compiled core keeps indices and times in C integers (Py_ssize_t, long long). A Python value too large
# for one must be refused like any other bad value, before it gets there: the same exception and message
# from the compiled build and from the pure-Python one (which has no such limit).


def _action(action: object) -> object:
    from envs.data import generate_synthetic
    from envs.replay import MarketReplayEnv

    env = MarketReplayEnv(data=generate_synthetic(["BTC/USDT"], 400, 3).frames["BTC/USDT"], window=8)
    env.reset(seed=0)
    return env.step(action)[1]


_ACTION_CASES: dict[str, object] = {
    "2**64": 2**64,
    "2**63": 2**63,
    "-2**70": -(2**70),
    "uint64 max": np.uint64(2**64 - 1),
    "inf": float("inf"),
    "nan": float("nan"),
    "None": None,
    "'x'": "x",
}


def _restore_sequence(**state: object) -> object:
    from envs.core import TradingCore
    from envs.market import MarketSpec

    core = TradingCore.simulated(MarketSpec("BTC/USDT"))
    core.restore_sequence({"bar_index": 0, "seq": 0, "last_decision_ns": -1, **state})
    core.mark(0, 100.0)  # then a bar and an order: the counts go on from the restored ones
    order = core.execute(1.0, time_ns=0, price=100.0, decision_time_ns=5).orders[0]
    return core.sequence_state(), order.order_id


_MAX = 2**63 - 1
_COUNTER_MAX = 2**62  # envs.errors.COUNTER_MAX: counts leave room to grow in a C integer
_HIGHS = f"{_COUNTER_MAX}|{_MAX}"
_SEQUENCE_CASES: dict[str, dict[str, object]] = {
    "bar_index=2**63": {"bar_index": 2**63},
    "bar_index=2**62+1": {"bar_index": _COUNTER_MAX + 1},
    "bar_index=-1": {"bar_index": -1},
    "bar_index=1.5": {"bar_index": 1.5},
    "seq=2**64": {"seq": 2**64},
    "seq=2**62+1": {"seq": _COUNTER_MAX + 1},
    "seq=True": {"seq": True},
    "last_decision_ns=1e19": {"last_decision_ns": 1e19},
    "last_decision_ns=-2": {"last_decision_ns": -2},
    "last_decision_ns=inf": {"last_decision_ns": float("inf")},
    "last_decision_ns=nan": {"last_decision_ns": float("nan")},
    "last_decision_ns='1'": {"last_decision_ns": "1"},
}


def _portfolio_from_state(**trade: object) -> object:
    from envs.portfolio import Portfolio

    state = {**Portfolio("BTC/USDT").to_state(), "qty": 1.0}
    state["trade"] = {
        "trade_id": "t", "side": 1, "entry_time_ns": 0, "entry_bar": 0, "entry_ref": -1, "qty": 1.0,
        "avg_price": 100.0, "fees": 0.1, "borrow": 0.0, "slices": 0, **trade,
    }  # fmt: skip
    return Portfolio.from_state(state).to_state()["trade"]


_TRADE_CASES: dict[str, dict[str, object]] = {
    "side=2**64": {"side": 2**64},
    "entry_time_ns=1e19": {"entry_time_ns": 1e19},
    "entry_time_ns=nan": {"entry_time_ns": float("nan")},
    "entry_bar=2**63": {"entry_bar": 2**63},
    "entry_ref=-2**63-1": {"entry_ref": -(2**63) - 1},
    "slices=2**64": {"slices": 2**64},
    "slices=2**62+1": {"slices": _COUNTER_MAX + 1},
}


def _portfolio_money(**fields: object) -> object:
    from envs.portfolio import Portfolio

    return Portfolio.from_state({**Portfolio("BTC/USDT").to_state(), **fields}).to_state()["cash"]


# Money and quantities: not a number, not finite or a negative price poisons every later figure.
_MONEY_CASES: dict[str, dict[str, object]] = {
    "cash=nan": {"cash": float("nan")},
    "qty=inf": {"qty": float("inf")},
    "last_price=-1": {"last_price": -1.0},
    "realized_pnl='1'": {"realized_pnl": "1"},
    "fees_paid=True": {"fees_paid": True},
    "borrow_paid=10**400": {"borrow_paid": 10**400},
}
_TRADE_MONEY_CASES: dict[str, dict[str, object]] = {
    "qty=nan": {"qty": float("nan")},
    "avg_price=-inf": {"avg_price": float("-inf")},
    "fees=None": {"fees": None},
    "borrow=inf": {"borrow": float("inf")},
}


def _refused(
    label: str, where: str, problem: str, cases: dict[str, dict[str, object]]
) -> dict[str, tuple[str, str]]:
    """The cases of ``label`` refused with a StateError naming the case's key (``where: key=... problem``)."""
    return {
        f"{label}({k})": (
            "StateError",
            rf"{where}: {next(iter(v))}=.* {problem}\. Fix: the saved state is damaged",
        )
        for k, v in cases.items()
    }


_NOT_FINITE = r"is not a finite number( >= 0)?"

REFUSALS: dict[str, tuple[str, str]] = {
    **_refused("money", "portfolio state", _NOT_FINITE, _MONEY_CASES),
    **_refused("trade money", "portfolio state trade", _NOT_FINITE, _TRADE_MONEY_CASES),
    "money(negative cash, as a margin account may hold)": ("returned", r"^-5\.0$"),
    **{f"step({k})": ("ConfigError", r"action: action .* is outside Discrete\(3\)") for k in _ACTION_CASES},
    **_refused(
        "restore_sequence", "checkpoint core", rf"is not an integer in -?[01]\.\.({_HIGHS})", _SEQUENCE_CASES
    ),
    **_refused(
        "from_state", "portfolio state trade", rf"is not an integer in -?[01]\.\.({_HIGHS}|1)", _TRADE_CASES
    ),
    # The largest values restored (a count past them could wrap in a C integer as it grows), and the -1
    # of a core that has not decided yet.
    "restore_sequence(max counts)": (
        "returned",
        rf"'bar_index': {_COUNTER_MAX + 1}, 'seq': {_COUNTER_MAX + 1}, .*-{_COUNTER_MAX + 1}'",
    ),
    "restore_sequence(max time)": ("returned", r"'bar_index': 1, 'seq': 0, 'last_decision_ns': 5}, '.*-0'"),
    "restore_sequence(fresh)": ("returned", r"'bar_index': 1, 'seq': 0, 'last_decision_ns': 5}, '.*-0'"),
    "from_state(max)": (
        "returned",
        rf"'entry_bar': {_MAX}, 'entry_ref': {_MAX}, 'entry_time_ns': {_MAX}, .*'slices': {_COUNTER_MAX}",
    ),
}
"""Case -> (exception class, pattern its message matches)."""


def refusal_outcomes() -> dict[str, list[str]]:
    """What each case of :data:`REFUSALS` raises in this process's build: ``[class name, message]``."""
    cases: dict[str, Callable[[], object]] = {
        **{f"step({k})": (lambda a=a: _action(a)) for k, a in _ACTION_CASES.items()},
        **{
            f"restore_sequence({k})": (lambda v=v: _restore_sequence(**v)) for k, v in _SEQUENCE_CASES.items()
        },
        "restore_sequence(max counts)": lambda: _restore_sequence(
            bar_index=_COUNTER_MAX, seq=_COUNTER_MAX, last_decision_ns=5
        ),
        "restore_sequence(max time)": lambda: _restore_sequence(last_decision_ns=_MAX),
        "restore_sequence(fresh)": lambda: _restore_sequence(),
        **{f"from_state({k})": (lambda t=v: _portfolio_from_state(**t)) for k, v in _TRADE_CASES.items()},
        **{f"money({k})": (lambda f=v: _portfolio_money(**f)) for k, v in _MONEY_CASES.items()},
        **{
            f"trade money({k})": (lambda t=v: _portfolio_from_state(**t))
            for k, v in _TRADE_MONEY_CASES.items()
        },
        "money(negative cash, as a margin account may hold)": lambda: _portfolio_money(cash=-5),
        "from_state(max)": lambda: _portfolio_from_state(
            entry_time_ns=_MAX, entry_bar=_MAX, entry_ref=_MAX, slices=_COUNTER_MAX
        ),
    }
    out = {}
    for name, case in cases.items():
        try:
            out[name] = ["returned", repr(case())]
        except Exception as exc:
            out[name] = [type(exc).__name__, str(exc)]
    return out


@pytest.fixture(scope="module")
def outcomes() -> dict[str, dict[str, list[str]]]:
    """:func:`refusal_outcomes` in a pure-Python subprocess and, when built, a compiled one."""
    code = "import json; from tests.envs.test_native import refusal_outcomes as r; print(json.dumps(r()))"
    builds = {"pure": json.loads(_run(code, **{_native.PURE_ENV: "1"}))}
    if _native.compiled():
        builds["compiled"] = json.loads(_run(code))
    return builds


@pytest.mark.parametrize("case", list(REFUSALS))
def test_out_of_range_input_is_refused_alike_by_both_builds(
    outcomes: dict[str, dict[str, list[str]]], case: str
) -> None:
    kind, pattern = REFUSALS[case]
    pure = outcomes["pure"][case]
    assert pure[0] == kind, pure
    assert re.search(pattern, pure[1]), pure
    if kind != "returned":
        assert "Fix:" in pure[1]
    if "compiled" not in outcomes:
        pytest.skip(f"no compiled core to compare ({_native.status()})")
    assert outcomes["compiled"][case] == pure
