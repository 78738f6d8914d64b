"""Promotion bundles: a trained policy with everything the live runner needs, checksummed.

:func:`promote` copies a finished run directory's outputs into a self-contained bundle directory::

    <bundle>/
        manifest.json            format, version, and the sha256 and size of every other file
        model.zip                the SB3 model (the run's best_model.zip if it has one, else model.zip)
        learned_state.pkl        the learned snapshot the model was selected with (learning runs only)
        learned_state.json       the same snapshot, readable
        learning/state.sqlite    a consistent copy of the learning store (learning runs only)
        features.json            feature schema: column names, FeatureConfig, window, categorical columns
        normalization.json       observation normalization (fitted on the training split)
        market.json              the market spec the run traded (dataset spec with the config's overrides)
        config.yaml              the run's resolved config
        metrics.json             validation and test metrics of the run
        versions.json            package versions of the run
        lineage.json             run directory name, data reference (digest), splits, selecting evaluation

**Trust.** SB3 model files and ``learned_state.pkl`` are pickles: loading one can run arbitrary code.
:func:`load_bundle` therefore loads only bundles whose manifest verifies (every file's sha256 matches,
no file missing or added); a bundle that fails is refused with a :class:`~envs.errors.StateError` naming
the file. Verify a bundle received from elsewhere with ``slf bundle verify`` and load only bundles you
trust. Bundles never contain API keys, environment variables or the command line of the run.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import sqlite3
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from agents.switches import LearningSwitches
from envs.errors import ConfigError, StateError
from envs.features import FeatureConfig, FeatureMatrix, NormalizationStats, feature_layout
from envs.market import MarketSpec
from learning.store import STORE_DIRNAME, STORE_FILENAME

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm

    from learning.config import LearningConfig
    from learning.state import LearnedState

__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_VERSION",
    "MANIFEST",
    "Bundle",
    "EnvSettings",
    "load_bundle",
    "promote",
    "verify_bundle",
]

BUNDLE_FORMAT: Final = "slf.bundle"
BUNDLE_VERSION: Final = 1
MANIFEST: Final = "manifest.json"
MODEL: Final = "model.zip"
LEARNED_PKL: Final = "learned_state.pkl"
LEARNED_JSON: Final = "learned_state.json"
STORE: Final = f"{STORE_DIRNAME}/{STORE_FILENAME}"
FEATURES: Final = "features.json"
NORMALIZATION: Final = "normalization.json"
MARKET: Final = "market.json"
CONFIG: Final = "config.yaml"
METRICS: Final = "metrics.json"
VERSIONS: Final = "versions.json"
LINEAGE: Final = "lineage.json"

# Files of a run directory (see experiments.runs; agents may not import experiments).
RUN_CONFIG: Final = "config.yaml"
RUN_INFO: Final = "run.json"
RUN_BEST_MODEL: Final = "best_model.zip"
RUN_BEST_STATE: Final = "best_learned_state.pkl"
RUN_FINISHED: Final = "finished"

SELECTED_BEST: Final = "best"
SELECTED_FINAL: Final = "final"
_CHUNK: Final = 1 << 20
_REPROMOTE: Final = "promote the run again (slf promote RUN_DIR --to BUNDLE --force)"


# --- checksums ---------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _files(root: Path) -> list[str]:
    """Every regular file below ``root`` except the manifest, as sorted POSIX relative paths."""
    return sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != MANIFEST
    )


def _read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST
    if not root.is_dir():
        raise StateError(
            "no such bundle directory", where=str(root), fix="give a directory made by slf promote"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StateError("the bundle has no manifest", where=str(path), fix=_REPROMOTE) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise StateError(f"the manifest is corrupt ({exc})", where=str(path), fix=_REPROMOTE) from None
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(data, dict) or data.get("format") != BUNDLE_FORMAT or not isinstance(files, dict):
        raise StateError("not a bundle manifest", where=str(path), fix=_REPROMOTE)
    if data.get("version") != BUNDLE_VERSION:
        raise StateError(
            f"bundle version {data.get('version')!r} is not {BUNDLE_VERSION}", where=str(path), fix=_REPROMOTE
        )
    for name, entry in files.items():
        if (
            not isinstance(name, str)
            or name.startswith("/")
            or ".." in Path(name).parts
            or not isinstance(entry, dict)
            or not isinstance(entry.get("sha256"), str)
        ):
            raise StateError(f"the manifest lists a bad entry {name!r}", where=str(path), fix=_REPROMOTE)
    return data


def verify_bundle(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Recompute the sha256 of every file of the bundle at ``path`` and compare with its manifest.

    Returns:
        The manifest.

    Raises:
        StateError: a missing or corrupt manifest, a file missing, changed (named) or not listed.
    """
    root = Path(path)
    manifest = _read_manifest(root)
    listed: dict[str, dict[str, Any]] = manifest["files"]
    for name, entry in sorted(listed.items()):
        file = root / name
        if not file.is_file():
            raise StateError("a file of the bundle is missing", where=str(file), fix=_REPROMOTE)
        if _sha256(file) != entry["sha256"]:
            raise StateError(
                "checksum mismatch: the file changed after promotion",
                where=str(file),
                fix=f"{_REPROMOTE}; do not edit bundles",
            )
    extra = [name for name in _files(root) if name not in listed]
    if extra:
        raise StateError(
            f"file(s) not in the manifest: {extra}",
            where=str(root),
            fix=f"remove them or {_REPROMOTE}",
        )
    return manifest


# --- promote ------------------------------------------------------------------------------------------


def _copy_store(source: Path, target: Path) -> None:
    """A consistent copy of a SQLite store (WAL included) through SQLite's backup API."""
    target.parent.mkdir(parents=True, exist_ok=True)
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
            # A single self-contained file: no -wal/-shm side files next to it in the bundle.
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
    finally:
        src.close()


def _copy_model(source: Path, target: Path) -> None:
    """Copy an SB3 model archive without the machine path of the run's TensorBoard directory.

    SB3 stores ``tensorboard_log`` (an absolute path of the training machine) in the archive's ``data``
    JSON; it is set to null, every other entry is copied byte for byte.
    """
    import zipfile

    try:
        with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
            for item in src.infolist():
                payload = src.read(item)
                if item.filename == "data":
                    data = json.loads(payload)
                    if isinstance(data, dict) and data.get("tensorboard_log") is not None:
                        data["tensorboard_log"] = None
                        payload = json.dumps(data, indent=4).encode("utf-8")
                dst.writestr(item, payload)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise StateError(
            f"cannot read the model archive ({exc})", where=str(source), fix="retrain the run"
        ) from None


def _selection(run_dir: Path) -> dict[str, Any]:
    """Which evaluation selected the best model (from ``evaluations.npz``), as far as it is known."""
    out: dict[str, Any] = {
        "model": SELECTED_BEST,
        "by": "highest mean reward of the periodic deterministic evaluation on the validation split",
    }
    npz = run_dir / "evaluations.npz"
    if npz.is_file():
        import numpy as np

        with np.load(npz) as data:
            if "results" in data and "timesteps" in data and len(data["timesteps"]):
                means = data["results"].mean(axis=1)
                best = int(np.argmax(means))
                out["timestep"] = int(data["timesteps"][best])
                out["mean_reward"] = float(means[best])
    return out


def _json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StateError("file not found", where=str(path), fix="check the run directory or bundle") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise StateError(
            f"cannot read ({exc})", where=str(path), fix="check the run directory or bundle"
        ) from None


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _read_config(path: Path) -> dict[str, Any]:
    """The run's resolved config (every default filled in) as plain data."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StateError(
            "config.yaml not found", where=str(path), fix="give a run directory made by slf train"
        ) from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise StateError(f"cannot read the config ({exc})", where=str(path), fix="check the file") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), dict) for k in ("data", "env", "algo")):
        raise StateError(
            "not a resolved run config", where=str(path), fix="give a run directory made by slf train"
        )
    return data


def _market_spec(config: Mapping[str, Any], info: Mapping[str, Any]) -> MarketSpec:
    """The dataset's spec with the config's ``env.market`` overrides (as the run's preparation does)."""
    from envs.data import dataset_info

    data = config["data"]
    if data.get("dataset") is not None:
        base = dataset_info(str(data["dataset"])).spec
    else:
        symbol = (info.get("data") or {}).get("symbol") or data.get("symbol") or "ASSET"
        base = MarketSpec(str(symbol))
    changes = {k: v for k, v in (config["env"].get("market") or {}).items() if v is not None}
    return MarketSpec.from_dict({**base.to_dict(), **changes}) if changes else base


def promote(run_dir: str | os.PathLike[str], dest: str | os.PathLike[str], *, force: bool = False) -> Path:
    """Write a bundle of the finished run at ``run_dir`` into the directory ``dest``.

    The model is the run's ``best_model.zip`` when it has one (with the learned snapshot it was selected
    with), else ``model.zip`` (with the final learned state). The bundle is written to a temporary
    directory next to ``dest`` and moved into place once complete and checksummed.

    Raises:
        StateError: not a finished run directory, or ``dest`` exists and ``force`` is false.
    """
    root = Path(run_dir)
    if not root.is_dir():
        raise StateError(
            "no such run directory", where=str(root), fix="give a directory that `slf train` made"
        )
    config = _read_config(root / RUN_CONFIG)
    info = _json_file(root / RUN_INFO)
    if info.get("status") != RUN_FINISHED:
        raise StateError(
            f"the run is not finished (status {info.get('status')!r})",
            where=str(root / RUN_INFO),
            fix="promote a run that `slf train` completed",
        )
    target = Path(dest)
    if target.exists() and not force:
        raise StateError(
            "the bundle directory already exists", where=str(target), fix="pick another name or pass --force"
        )
    normalization = NormalizationStats.load(root / NORMALIZATION)
    if normalization.feature_config is None:
        raise StateError(
            "the normalization statistics do not record their feature config",
            where=str(root / NORMALIZATION),
            fix="retrain the run with this version",
        )
    feature_config = FeatureConfig.from_dict(normalization.feature_config)
    learning = config.get("learning") or {}
    learning_on = bool(learning.get("enabled", False))

    best = (root / RUN_BEST_MODEL).is_file()
    model_file = root / (RUN_BEST_MODEL if best else MODEL)
    if not model_file.is_file():
        raise StateError("the run has no model file", where=str(model_file), fix="train the run to the end")

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        _copy_model(model_file, tmp / MODEL)
        shutil.copyfile(root / RUN_CONFIG, tmp / CONFIG)
        normalization.save(tmp / NORMALIZATION)
        store = root / STORE
        state: LearnedState | None = None
        if best and (root / RUN_BEST_STATE).is_file():
            with (root / RUN_BEST_STATE).open("rb") as fh:  # the run's own pickle, written by slf train
                state = pickle.load(fh)
        if learning_on and store.is_file():
            _copy_store(store, tmp / STORE)
            if state is None:
                from learning.manager import UniversalLearningManager

                with UniversalLearningManager(tmp, create=False, read_only=True) as manager:
                    state = manager.snapshot()
        if state is not None:
            with (tmp / LEARNED_PKL).open("wb") as fh:
                pickle.dump(state, fh)
            _write_json(tmp / LEARNED_JSON, state.to_dict())
        columns = [name for group in feature_layout(feature_config).values() for name in group]
        _write_json(
            tmp / FEATURES,
            {
                "columns": columns,
                "feature_config": feature_config.to_dict(),
                "categorical": sorted(normalization.categorical),
                "window": int(config["env"]["window"]),
            },
        )
        spec = _market_spec(config, info)
        _write_json(tmp / MARKET, spec.to_dict())
        for name in (METRICS, VERSIONS):
            if (root / name).is_file():
                shutil.copyfile(root / name, tmp / name)
        selection = _selection(root) if best else {"model": SELECTED_FINAL, "by": "end of training"}
        _write_json(
            tmp / LINEAGE,
            {
                "run": root.name,
                "experiment": config.get("name"),
                "data": info.get("data"),
                "splits": info.get("splits"),
                "seed": info.get("seed"),
                "algo": info.get("algo"),
                "policy_sha256": info.get("policy_sha256"),
                "selected": selection,
                "learning": learning_on,
            },
        )
        manifest = {
            "format": BUNDLE_FORMAT,
            "version": BUNDLE_VERSION,
            "created": datetime.now(tz=UTC).isoformat(timespec="seconds"),
            "algo": str(config["algo"]["algo"]),
            "symbol": spec.symbol,
            "files": {
                name: {"sha256": _sha256(tmp / name), "bytes": (tmp / name).stat().st_size}
                for name in _files(tmp)
            },
        }
        _write_json(tmp / MANIFEST, manifest)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


# --- load ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EnvSettings:
    """The trading options of ``MarketReplayEnv`` that the live runner reproduces (from ``env:``).

    Attributes mirror :class:`envs.replay.MarketReplayEnv`'s arguments of the same names.
    """

    window: int
    actions: tuple[float, ...] | str
    allow_short: bool = True
    leverage: float = 1.0
    initial_cash: float = 10_000.0
    borrow_rate: float = 0.0
    rebalance_band: float = 0.05

    @classmethod
    def from_mapping(cls, env: Mapping[str, Any], *, where: str = "config.yaml env") -> EnvSettings:
        """From a resolved config's ``env`` section."""
        try:
            actions = env["actions"]
            return cls(
                window=int(env["window"]),
                actions=str(actions) if isinstance(actions, str) else tuple(float(a) for a in actions),
                allow_short=bool(env["allow_short"]),
                leverage=float(env["leverage"]),
                initial_cash=float(env["initial_cash"]),
                borrow_rate=float(env["borrow_rate"]),
                rebalance_band=float(env["rebalance_band"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(
                f"the env section is incomplete ({exc!r})", where=where, fix=_REPROMOTE
            ) from None


@dataclass(frozen=True)
class Bundle:
    """A verified bundle (see :func:`load_bundle`).

    Attributes:
        path: the bundle directory.
        manifest: its manifest.
        config: the run's resolved config (plain data; ``experiments.config.load_config`` validates it).
        env: the trading options the runner reproduces.
        algo: the SB3 algorithm name.
        switches: the learning switches of the run.
        learning_config: the learning manager's thresholds (``None``: learning off).
        feature_config: the features the policy was trained on.
        columns: the feature columns, in matrix order.
        normalization: observation normalization statistics.
        spec: the market spec the run traded.
        window: observation window in bars.
        lineage: where the model comes from.
        metrics: the run's validation and test metrics (empty when absent).
    """

    path: Path
    manifest: Mapping[str, Any]
    config: Mapping[str, Any]
    env: EnvSettings
    algo: str
    switches: LearningSwitches
    learning_config: LearningConfig | None
    feature_config: FeatureConfig
    columns: tuple[str, ...]
    normalization: NormalizationStats
    spec: MarketSpec
    window: int
    lineage: Mapping[str, Any]
    metrics: Mapping[str, Any]

    @property
    def store(self) -> Path | None:
        """The bundled learning store (copy it before opening: bundles are read-only), if any."""
        path = self.path / STORE
        return path if path.is_file() else None

    def learned_state(self) -> LearnedState | None:
        """The bundled learned snapshot (a pickle; the bundle's manifest was verified on load)."""
        path = self.path / LEARNED_PKL
        if not path.is_file():
            return None
        with path.open("rb") as fh:
            state: LearnedState = pickle.load(fh)
        return state

    def load_model(self, *, device: str = "cpu") -> BaseAlgorithm:
        """The SB3 model (a pickle; the bundle's manifest was verified on load)."""
        from agents.policies import load_model

        return load_model(self.algo, self.path / MODEL, device=device)

    def check_features(self, matrix: FeatureMatrix) -> None:
        """Raise :class:`ConfigError` unless ``matrix`` has the bundle's feature columns and config."""
        if tuple(matrix.columns) != self.columns:
            missing = [c for c in self.columns if c not in matrix.columns]
            extra = [c for c in matrix.columns if c not in self.columns]
            detail = f"missing {missing}, unexpected {extra}" if missing or extra else "in a different order"
            raise ConfigError(
                f"the live features do not match the bundle's feature schema: {detail}",
                where=str(self.path / FEATURES),
                fix="compute the live features with the bundle's FeatureConfig, or promote a matching run",
            )
        if matrix.config is not None and matrix.config != self.feature_config:
            mine, theirs = self.feature_config.to_dict(), matrix.config.to_dict()
            keys = sorted(k for k in mine if mine[k] != theirs.get(k))
            raise ConfigError(
                f"the live features were computed with a different FeatureConfig (fields {keys})",
                where=str(self.path / FEATURES),
                fix="compute the live features with the bundle's FeatureConfig",
            )


def load_bundle(path: str | os.PathLike[str], *, features: FeatureMatrix | None = None) -> Bundle:
    """Verify and open the bundle at ``path``.

    Only a bundle whose manifest verifies is opened (its model and learned state are pickles). With
    ``features`` (the matrix computed for the live data), its schema is checked against the bundle's.

    Raises:
        StateError: a missing or corrupt manifest, a checksum mismatch (naming the file), unreadable
            contents.
        ConfigError: ``features`` whose columns or FeatureConfig differ from the bundle's.
    """
    from learning.config import LearningConfig

    root = Path(path)
    manifest = verify_bundle(root)
    try:
        schema = _json_file(root / FEATURES)
        columns = tuple(str(c) for c in schema["columns"])
        feature_config = FeatureConfig.from_dict(schema["feature_config"])
        window = int(schema["window"])
        spec = MarketSpec.from_dict(_json_file(root / MARKET))
        lineage = _json_file(root / LINEAGE)
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise StateError(
            f"the bundle's schema files are incomplete ({exc})", where=str(root), fix=_REPROMOTE
        ) from None
    config = _read_config(root / CONFIG)
    env = EnvSettings.from_mapping(config["env"], where=str(root / CONFIG))
    learning = dict(config.get("learning") or {"enabled": False})
    try:
        learning_config = LearningConfig(**(learning.pop("config", None) or {}))
        switches = LearningSwitches(**learning)
    except ValueError as exc:
        raise StateError(
            f"the learning section is invalid ({exc})", where=str(root / CONFIG), fix=_REPROMOTE
        ) from None
    normalization = NormalizationStats.load(root / NORMALIZATION)
    if normalization.columns != columns:
        raise StateError(
            "normalization.json and features.json list different columns", where=str(root), fix=_REPROMOTE
        )
    metrics = _json_file(root / METRICS) if (root / METRICS).is_file() else {}
    bundle = Bundle(
        path=root,
        manifest=manifest,
        config=config,
        env=env,
        algo=str(config["algo"]["algo"]),
        switches=switches,
        learning_config=learning_config if switches.enabled else None,
        feature_config=feature_config,
        columns=columns,
        normalization=normalization,
        spec=spec,
        window=window,
        lineage=lineage,
        metrics=metrics,
    )
    if features is not None:
        bundle.check_features(features)
    return bundle
