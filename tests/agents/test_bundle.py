"""Promotion bundles: contents, checksums, refusals (tampering, missing/corrupt manifest, schema), the
bundle driving the live runner, and the ``slf promote`` / ``slf bundle verify`` / ``slf live`` commands.

One tiny PPO run (128 steps, learning on) is trained once for the module."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import typer

from agents.bundle import MANIFEST, load_bundle, promote, verify_bundle
from agents.runner import LiveRunner
from envs.data import load_dataset
from envs.errors import ConfigError, SlfError, StateError
from envs.features import FeatureConfig, compute_features
from envs.live import ReplayFeed
from experiments.cli_bundle import app as bundle_app
from experiments.cli_bundle import promote_command
from experiments.cli_live import live_command
from experiments.config import apply_overrides, load_config
from experiments.train import train

CONFIG = Path(__file__).resolve().parents[2] / "experiments" / "configs" / "ppo_eurusd_1h.yaml"
TINY: dict[str, Any] = {
    "name": "bundle",
    "train.timesteps": 128,
    "train.n_envs": 1,
    "train.vec_env": "dummy",
    "train.eval_every": 64,
    "train.checkpoint_every": 0,
    "train.progress_bar": False,
    "algo.n_steps": 64,
    "algo.batch_size": 32,
}
SECRET = "sk-live-DO-NOT-LEAK-0123456789"
EXPECTED = {
    "model.zip",
    "learned_state.pkl",
    "learned_state.json",
    "learning/state.sqlite",
    "features.json",
    "normalization.json",
    "market.json",
    "config.yaml",
    "metrics.json",
    "versions.json",
    "lineage.json",
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    (result,) = train(apply_overrides(load_config(CONFIG), TINY), runs_dir=runs)
    return result.run_dir


@pytest.fixture
def bundle(run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BINANCE_API_SECRET", SECRET)
    return promote(run_dir, tmp_path / "bundles" / "eurusd")


def test_promote_writes_every_part_with_a_manifest_of_checksums(bundle: Path, run_dir: Path) -> None:
    manifest = json.loads((bundle / MANIFEST).read_text())
    assert set(manifest["files"]) == EXPECTED
    assert all(len(entry["sha256"]) == 64 for entry in manifest["files"].values())
    with zipfile.ZipFile(bundle / "model.zip") as ours, zipfile.ZipFile(run_dir / "best_model.zip") as theirs:
        assert ours.read("policy.pth") == theirs.read("policy.pth")
    lineage = json.loads((bundle / "lineage.json").read_text())
    run = json.loads((run_dir / "run.json").read_text())
    assert lineage["run"] == run_dir.name
    assert lineage["data"]["digest"] == run["data"]["digest"]
    assert lineage["splits"] == run["splits"]
    assert lineage["selected"]["model"] == "best"
    assert "validation" in lineage["selected"]["by"]
    schema = json.loads((bundle / "features.json").read_text())
    assert schema["window"] == 16
    assert "trend_dir_x16" in schema["columns"]
    assert verify_bundle(bundle) == manifest


def test_bundles_hold_no_secrets_nor_machine_paths(bundle: Path, run_dir: Path) -> None:
    for file in bundle.rglob("*"):
        if file.is_file():
            data = file.read_bytes()
            assert SECRET.encode() not in data, file
            assert str(run_dir.parent).encode() not in data, file


def test_load_bundle_opens_model_state_and_schema(bundle: Path) -> None:
    loaded = load_bundle(bundle)
    assert loaded.spec.symbol == "EUR/USD"
    assert loaded.window == 16
    assert loaded.switches.enabled
    assert loaded.learned_state() is not None
    assert loaded.store is not None
    model = loaded.load_model()
    assert model.observation_space.shape == (16 * len(loaded.columns) + 3,)


@pytest.mark.parametrize("name", ["normalization.json", "model.zip", "learning/state.sqlite"])
def test_a_tampered_file_is_refused_by_name(bundle: Path, name: str) -> None:
    file = bundle / name
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    file.write_bytes(bytes(data))
    with pytest.raises(StateError, match=rf"{name}: checksum mismatch.*Fix: promote the run again"):
        verify_bundle(bundle)
    with pytest.raises(StateError, match="checksum mismatch"):
        load_bundle(bundle)


def test_missing_corrupt_manifest_and_stray_files_are_refused(bundle: Path) -> None:
    (bundle / "extra.pkl").write_bytes(b"x")
    with pytest.raises(StateError, match=r"not in the manifest: \['extra.pkl'\]"):
        load_bundle(bundle)
    (bundle / "extra.pkl").unlink()
    (bundle / "market.json").unlink()
    with pytest.raises(StateError, match=r"market.json: a file of the bundle is missing"):
        load_bundle(bundle)
    (bundle / MANIFEST).write_text("{not json")
    with pytest.raises(StateError, match=r"manifest.json: the manifest is corrupt"):
        load_bundle(bundle)
    (bundle / MANIFEST).unlink()
    with pytest.raises(StateError, match=r"manifest.json: the bundle has no manifest"):
        load_bundle(bundle)


def test_existing_bundle_is_not_overwritten_without_force(bundle: Path, run_dir: Path) -> None:
    with pytest.raises(StateError, match=r"already exists.*--force"):
        promote(run_dir, bundle)
    (bundle / "model.zip").write_bytes(b"broken")
    promote(run_dir, bundle, force=True)
    verify_bundle(bundle)


def test_unfinished_runs_are_not_promoted(run_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    info = json.loads((copy / "run.json").read_text())
    (copy / "run.json").write_text(json.dumps({**info, "status": "running"}))
    with pytest.raises(StateError, match=r"run\.json: the run is not finished"):
        promote(copy, tmp_path / "b")
    with pytest.raises(StateError, match="no such run directory"):
        promote(tmp_path / "nope", tmp_path / "b")


def test_live_features_must_match_the_bundle_schema(bundle: Path) -> None:
    bars = load_dataset("eurusd_1h").iloc[:600]
    load_bundle(bundle, features=compute_features(bars, FeatureConfig()))
    other = compute_features(bars, FeatureConfig(higher_timeframes=(4, 8)))
    with pytest.raises(
        ConfigError, match=r"features.json: .*missing \['trend_dir_x16'\], unexpected \['trend_dir_x8'\]"
    ):
        load_bundle(bundle, features=other)
    with pytest.raises(ConfigError, match=r"different FeatureConfig \(fields \['rsi_period'\]\)"):
        load_bundle(bundle, features=compute_features(bars, FeatureConfig(rsi_period=7)))


def test_bundle_drives_the_live_runner_without_writing_the_bundle(bundle: Path, tmp_path: Path) -> None:
    loaded = load_bundle(bundle)
    bars = load_dataset("eurusd_1h").iloc[:1200]
    runner = LiveRunner.from_bundle(loaded, ReplayFeed(bars, start=1100), state_dir=tmp_path / "live")
    runner.build()
    asyncio.run(runner.run())
    assert runner.bars == 100
    assert len(runner.infos) == 99
    assert (tmp_path / "live" / "learning" / "state.sqlite").is_file()
    verify_bundle(bundle)  # the runner learned into its own copy of the store


# --- the commands -------------------------------------------------------------------------------------


def _app() -> typer.Typer:
    """The commands registered as experiments/cli.py registers them."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.add_typer(bundle_app, name="bundle")
    app.command("promote")(promote_command)
    app.command("live")(live_command)
    return app


def _slf(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the commands with ``slf``'s error convention (SlfError: one line on stderr, exit 2)."""
    try:
        _app()(args=argv, prog_name="slf")
        code = 0
    except SlfError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_promote_verify_and_tampering(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "bundles" / "b"
    code, out, _ = _slf(["promote", str(run_dir), "--to", str(dest)], capsys)
    assert code == 0
    assert "11 files" in out
    code, _, err = _slf(["promote", str(run_dir), "--to", str(dest)], capsys)
    assert code == 2
    assert err.startswith("error: ")
    assert "already exists" in err
    assert err.count("\n") == 1
    code, out, _ = _slf(["bundle", "verify", str(dest)], capsys)
    assert (code, out.startswith("ok: ")) == (0, True)
    with (dest / "metrics.json").open("a") as fh:
        fh.write(" ")
    code, _, err = _slf(["bundle", "verify", str(dest)], capsys)
    assert code == 2
    assert str(dest / "metrics.json") in err
    assert "checksum mismatch" in err
    assert err.count("\n") == 1
    code, _, err = _slf(["live", "--bundle", str(dest), "--symbol", "EUR/USD", "--data", "eurusd_1h"], capsys)
    assert code == 2
    assert "metrics.json" in err


def test_cli_live_paper_trades_and_refuses_unknown_exchanges(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["live", "--bundle", str(bundle), "--symbol", "EUR/USD", "--data", "eurusd_1h"]
    code, _, err = _slf([*base, "--exchange", "binanse"], capsys)
    assert code == 2
    assert "--exchange: unknown exchange 'binanse' (did you mean 'binance'?)" in err
    code, _, err = _slf([*base[:3], "--symbol", "BTC/USDT", *base[5:]], capsys)
    assert code == 2
    assert "--symbol" in err
    code, _, err = _slf([*base[:5], "--data", "eurusd_1hh"], capsys)
    assert code == 2
    assert "did you mean 'eurusd_1h'" in err
    code, out, err = _slf([*base, "--backfill", "6100", "--state-dir", str(tmp_path / "s")], capsys)
    assert code == 0, err
    assert out.startswith("EUR/USD ")
    assert "bars 125" in out
