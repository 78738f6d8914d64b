"""``slf train``: run directories, determinism, resume, seeds, every shipped config, and CLI errors.

Budgets are tiny (a few hundred steps, small rollouts) so the whole file runs in well under a minute.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from agents.policies import load_model
from envs.errors import ConfigError, StateError
from envs.features import NormalizationStats
from experiments.cli import main
from experiments.cli_train import parse_algo, parse_seeds
from experiments.config import RunConfig, apply_overrides, load_config, write_config
from experiments.runs import RunPaths
from experiments.train import RunResult, evaluate_split, policy_digest, prepare_data, resume_run, train
from learning.records import AvoidanceRule
from learning.state import LearnedState

CONFIGS = Path(__file__).resolve().parents[2] / "experiments" / "configs"
PPO_CONFIG = CONFIGS / "ppo_eurusd_1h.yaml"
TINY: dict[str, Any] = {
    "train.timesteps": 128,
    "train.n_envs": 1,
    "train.vec_env": "dummy",
    "train.eval_every": 64,
    "train.checkpoint_every": 0,
    "train.progress_bar": False,
    "algo.n_steps": 64,
    "algo.batch_size": 32,
}
# The synthetic market is 100,000 minute bars; three days of them are plenty for a smoke test.
SHORT_SYNTH = {"data.end": "2024-01-04", "env.episode_length": 240}
DQN_SMALL = {"algo.learning_starts": 32, "algo.buffer_size": 1000}


def tiny(
    path: Path = PPO_CONFIG, overrides: dict[str, Any] | None = None, name: str | None = None
) -> RunConfig:
    """A shipped config with the tiny budget, then ``overrides`` (dotted keys) and ``name``."""
    extra: dict[str, Any] = dict(overrides or {})
    if name is not None:
        extra["name"] = name
    return apply_overrides(load_config(path), {**TINY, **extra})


@pytest.fixture(scope="module")
def learning_run(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    """One tiny PPO run with the learning manager, shared by the run-directory tests."""
    runs = tmp_path_factory.mktemp("runs")
    (result,) = train(tiny(name="shared"), runs_dir=runs, command=["slf", "train", "--config", "x.yaml"])
    return result


# --- the run directory -----------------------------------------------------------------------------


def test_run_directory_layout(learning_run: RunResult) -> None:
    paths = RunPaths(learning_run.run_dir)
    assert paths.root.name == "ppo-seed0"
    assert paths.root.parent.name == "shared"
    for path in (
        paths.config,
        paths.command,
        paths.versions,
        paths.info,
        paths.normalization,
        paths.model,
        paths.best_model,
        paths.metrics,
        paths.learned_state,
        paths.best_learned_state,
        paths.evaluations,
        paths.root / "learning" / "state.sqlite",
    ):
        assert path.is_file(), path
    assert list(paths.tensorboard.rglob("events.out.tfevents*"))
    assert paths.command.read_text(encoding="utf-8").strip() == "slf train --config x.yaml"


def test_run_config_is_the_resolved_single_seed_config(learning_run: RunResult) -> None:
    stored = load_config(RunPaths(learning_run.run_dir).config)
    assert stored == learning_run.config
    assert stored.train.seeds == (0,)
    assert stored.ablation is None


def test_versions_name_the_libraries(learning_run: RunResult) -> None:
    versions = json.loads(RunPaths(learning_run.run_dir).versions.read_text(encoding="utf-8"))
    for key in ("python", "numpy", "torch", "stable-baselines3", "gymnasium", "pandas", "self-learning-flow"):
        assert versions[key]


def test_normalization_is_fitted_on_the_train_split_only(learning_run: RunResult) -> None:
    paths = RunPaths(learning_run.run_dir)
    info = json.loads(paths.info.read_text(encoding="utf-8"))
    stats = NormalizationStats.load(paths.normalization)
    train_rows = info["splits"]["train"]["rows"]
    assert list(stats.fit_span) == train_rows
    assert stats.fit_times[1] == info["splits"]["train"]["last"]
    assert train_rows[1] < info["splits"]["validation"]["rows"][0] < info["splits"]["test"]["rows"][0]


def test_metrics_cover_validation_and_test_of_both_models(learning_run: RunResult) -> None:
    metrics = json.loads(RunPaths(learning_run.run_dir).metrics.read_text(encoding="utf-8"))
    assert metrics["timesteps"] == 128
    for model in ("model", "best_model"):
        for split in ("validation", "test"):
            entry = metrics[model][split]
            assert entry["bars"] > 100
            assert {"total_return", "sharpe", "max_drawdown", "trades", "win_rate", "fees"} <= set(entry)


def test_tensorboard_has_learning_and_trading_scalars(learning_run: RunResult) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = RunPaths(learning_run.run_dir).tensorboard.rglob("events.out.tfevents*")
    accumulator = EventAccumulator(str(events.parent))
    accumulator.Reload()
    tags = accumulator.Tags()["scalars"]
    assert any(t.startswith("learning/") for t in tags), tags
    assert "eval/mean_reward" in tags


def test_same_config_and_seed_give_identical_parameters_and_metrics(
    learning_run: RunResult, tmp_path: Path
) -> None:
    (again,) = train(tiny(name="shared"), runs_dir=tmp_path)
    first, second = RunPaths(learning_run.run_dir), RunPaths(again.run_dir)
    assert policy_digest(load_model("ppo", first.model)) == policy_digest(load_model("ppo", second.model))
    assert first.metrics.read_text(encoding="utf-8") == second.metrics.read_text(encoding="utf-8")
    # ...and a different seed really changes them (so the comparison can fail).
    (other,) = train(tiny(overrides={"train.seeds": [1]}, name="other"), runs_dir=tmp_path)
    assert policy_digest(load_model("ppo", RunPaths(other.run_dir).model)) != policy_digest(
        load_model("ppo", first.model)
    )


def test_existing_run_directory_is_refused(learning_run: RunResult) -> None:
    with pytest.raises(StateError, match="already holds a run"):
        train(tiny(name="shared"), runs_dir=learning_run.run_dir.parent.parent)


# --- seeds, resume, configs --------------------------------------------------------------------------


def test_one_run_per_seed_without_learning(tmp_path: Path) -> None:
    config = tiny(
        overrides={"train.seeds": [0, 1], "learning.enabled": False, "train.eval_every": 0}, name="seeds"
    )
    results = train(config, runs_dir=tmp_path)
    assert [r.run_dir.name for r in results] == ["ppo-seed0", "ppo-seed1"]
    for result in results:
        assert RunPaths(result.run_dir).model.is_file()
        assert not (result.run_dir / "learning").exists()
        assert not RunPaths(result.run_dir).best_model.exists()


def test_resume_continues_from_the_last_checkpoint_in_the_same_directory(tmp_path: Path) -> None:
    config = tiny(overrides={"train.checkpoint_every": 64, "train.timesteps": 128}, name="resumed")
    (result,) = train(config, runs_dir=tmp_path, command=["slf", "train"])
    paths = RunPaths(result.run_dir)
    latest = json.loads((paths.checkpoints / "latest.json").read_text(encoding="utf-8"))
    assert latest["step"] == 128
    assert (paths.checkpoints / latest["dir"] / "learning" / "state.sqlite").is_file()
    code = main(["train", "--resume", str(paths.root), "--timesteps", "192", "--no-progress"])
    assert code == 0
    metrics = json.loads(paths.metrics.read_text(encoding="utf-8"))
    assert metrics["timesteps"] == 192
    assert load_config(paths.config).train.timesteps == 192
    assert len(paths.command.read_text(encoding="utf-8").splitlines()) == 2
    assert len(list(paths.tensorboard.iterdir())) == 1  # the same TensorBoard run continues


def test_resume_restores_the_replay_buffer_of_an_off_policy_run(tmp_path: Path) -> None:
    overrides = {**DQN_SMALL, "train.checkpoint_every": 64, "train.eval_every": 0}
    (result,) = train(tiny(CONFIGS / "dqn_googl_1d.yaml", overrides, name="dqn"), runs_dir=tmp_path)
    paths = RunPaths(result.run_dir)
    checkpoint = next(paths.checkpoints.glob("step_*"))
    assert (checkpoint / "replay_buffer.pkl").is_file()
    resumed = resume_run(paths.root, timesteps=192)
    assert resumed.metrics["timesteps"] == 192
    assert resumed.run_dir == paths.root


@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("ppo_eurusd_1h", {}),
        ("maskable_ppo_synth_btcusdt_1m", {**SHORT_SYNTH, "train.vec_env": "dummy"}),
        ("dqn_googl_1d", DQN_SMALL),
        ("ablation_ppo_eurusd_1h", {"train.eval_every": 0}),
    ],
)
def test_every_shipped_config_trains_for_a_tiny_budget(
    name: str, overrides: dict[str, Any], tmp_path: Path
) -> None:
    config = tiny(CONFIGS / f"{name}.yaml", overrides)
    results = train(config, runs_dir=tmp_path)
    assert len(results) == (2 if config.ablation else 1)
    for result in results:
        metrics = json.loads(RunPaths(result.run_dir).metrics.read_text(encoding="utf-8"))
        assert metrics["model"]["test"]["bars"] > 0


def test_maskable_ppo_trains_without_the_learning_manager(tmp_path: Path) -> None:
    config = tiny(
        CONFIGS / "maskable_ppo_synth_btcusdt_1m.yaml",
        {**SHORT_SYNTH, "learning.enabled": False, "train.vec_env": "dummy", "train.eval_every": 0},
    )
    (result,) = train(config, runs_dir=tmp_path)
    assert RunPaths(result.run_dir).model.is_file()


# --- the command line --------------------------------------------------------------------------------


def test_cli_trains_with_overrides(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_config(tiny(overrides={"train.eval_every": 0}), tmp_path / "small.yaml")
    runs = tmp_path / "runs"
    overrides = ["--algo", "A2C", "--seeds", "3", "--name", "cli", "--timesteps", "64"]
    code = main(
        [
            "train",
            "--config",
            str(tmp_path / "small.yaml"),
            *overrides,
            "--runs-dir",
            str(runs),
            "--no-progress",
        ]
    )
    assert code == 0
    run = runs / "cli" / "a2c-seed3"
    assert (run / "model.zip").is_file()
    stored = load_config(run / "config.yaml")
    assert stored.algo.algo.value == "a2c"
    assert stored.train.timesteps == 64
    out = capsys.readouterr().out
    assert "tensorboard --logdir" in out
    assert "a2c-seed3" in out


def _summary_rows(out: str) -> list[str]:
    """The first cells of the summary table's body rows."""
    return [line.split("│")[1].strip() for line in out.splitlines() if line.startswith("│")]


def test_cli_summary_names_the_final_model_when_no_best_model_was_saved(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_config(tiny(overrides={"train.eval_every": 0}), tmp_path / "small.yaml")
    argv = ["train", "-c", str(tmp_path / "small.yaml"), "--timesteps", "64", "--no-progress"]
    assert main([*argv, "--runs-dir", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert not (tmp_path / "runs" / "ppo_eurusd_1h" / "ppo-seed0" / "best_model.zip").exists()
    assert "metrics of model.zip, the final model" in out
    assert "best_model.zip, selected" not in out


def test_cli_summary_names_the_best_model_when_it_was_saved(
    learning_run: RunResult, capsys: pytest.CaptureFixture[str]
) -> None:
    from experiments.cli_train import _summary
    from experiments.evaluate import report_console

    _summary([learning_run], report_console(), learning_run.run_dir.parents[1])
    out = capsys.readouterr().out
    assert "metrics of best_model.zip, selected on the validation split" in out
    assert _summary_rows(out) == ["shared/ppo-seed0"]


def test_cli_resume_summary_names_the_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tiny(overrides={"train.checkpoint_every": 64, "train.timesteps": 64}, name="rs")
    (result,) = train(config, runs_dir=tmp_path / "runs")
    capsys.readouterr()
    assert main(["train", "--resume", str(result.run_dir), "--timesteps", "128", "--no-progress"]) == 0
    assert _summary_rows(capsys.readouterr().out) == ["rs/ppo-seed0"]


def one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    assert err.startswith("error: ")
    assert "Traceback" not in err
    return err


def test_cli_unknown_algorithm(capsys: pytest.CaptureFixture[str]) -> None:
    err = one_line_error(capsys, ["train", "--config", str(PPO_CONFIG), "--algo", "ppoo"])
    assert "--algo" in err
    assert "did you mean 'ppo'" in err


@pytest.mark.parametrize("seeds", ["0,x", "1,,2", "-1", "0,0"])
def test_cli_bad_seed_list(capsys: pytest.CaptureFixture[str], seeds: str) -> None:
    assert "--seeds" in one_line_error(capsys, ["train", "--config", str(PPO_CONFIG), "--seeds", seeds])


def test_cli_missing_config_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    err = one_line_error(capsys, ["train", "--config", str(tmp_path / "missing.yaml")])
    assert "missing.yaml" in err
    assert "config file not found" in err


def test_cli_no_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert "--config" in one_line_error(capsys, ["train"])


def test_cli_bad_resume_directory(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert "no such run directory" in one_line_error(capsys, ["train", "--resume", str(tmp_path / "nope")])
    assert "is not a run directory" in one_line_error(capsys, ["train", "--resume", str(tmp_path)])


def test_cli_resume_without_checkpoint(capsys: pytest.CaptureFixture[str], learning_run: RunResult) -> None:
    err = one_line_error(capsys, ["train", "--resume", str(learning_run.run_dir)])
    assert "no checkpoint" in err


def test_cli_resume_refuses_other_options(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    err = one_line_error(capsys, ["train", "--resume", str(tmp_path), "--algo", "dqn"])
    assert "cannot be combined with --resume" in err


def test_cli_bad_name_and_timesteps(capsys: pytest.CaptureFixture[str]) -> None:
    assert "name" in one_line_error(capsys, ["train", "--config", str(PPO_CONFIG), "--name", "a b"])
    assert "--timesteps" in one_line_error(capsys, ["train", "--config", str(PPO_CONFIG), "--timesteps", "0"])


def test_cli_multi_symbol_data_asks_for_the_config_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from envs.data import generate_synthetic

    generate_synthetic(["BTC/USDT", "ETH/USDT"], 2_000, 7).save_parquet(tmp_path / "two.parquet")
    config = load_config(PPO_CONFIG).model_dump(mode="json", exclude_none=True)
    config["data"] = {"path": "two.parquet", "calendar": "24/7"}
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    err = one_line_error(capsys, ["train", "-c", str(tmp_path / "two.yaml")])
    assert "holds 2 symbols" in err
    assert "data.symbol: BTC/USDT" in err
    assert "on the command line" not in err  # slf train has no --symbol


def test_cli_algorithm_that_cannot_act_on_the_actions(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    err = one_line_error(
        capsys, ["train", "--config", str(PPO_CONFIG), "--algo", "sac", "--runs-dir", str(tmp_path)]
    )
    assert "continuous" in err
    assert not any(tmp_path.iterdir())  # refused before any run directory was made


def test_parsers() -> None:
    assert parse_seeds("0, 1,2") == [0, 1, 2]
    assert parse_algo("MaskABLE_ppo").value == "maskable_ppo"
    with pytest.raises(ConfigError, match="repeats a seed"):
        parse_seeds("1,1")


def test_train_help_documents_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--config", "--algo", "--seeds", "--timesteps", "--name", "--runs-dir", "--resume"):
        assert option in out


# --- evaluation --------------------------------------------------------------------------------------


class AlwaysLong:
    """A policy that always picks the last discrete action (long)."""

    def predict(
        self, observation: Any, state: Any = None, episode_start: Any = None, deterministic: bool = True
    ) -> Any:
        return np.int64(2), state


def test_evaluation_runs_the_whole_split_and_applies_the_learned_snapshot() -> None:
    config = tiny()
    prepared = prepare_data(config)
    # One rule per label that atr_pct takes in the test split: together they veto every entry.
    test = prepared.splits.test
    column = prepared.market.features.columns.index("atr_pct")
    discretizer = LearnedState(version=0, time_ns=0).discretizer
    factors = {
        discretizer.factor("atr_pct", v)
        for v in prepared.market.features.values[test.start : test.end, column]
    }
    rules = tuple(
        AvoidanceRule(
            rule_id=f"avoid:{factor}",
            factor=factor,
            description=factor,
            support=5,
            losers=5,
            occurrence=1.0,
            winner_occurrence=0.0,
            lift=5.0,
            window_days=3.0,
            created_ns=0,
            updated_ns=0,
        )
        for factor in sorted(factors)
    )
    state = LearnedState(version=1, time_ns=0, rules=rules)
    bare = evaluate_split(config, prepared, AlwaysLong(), "test", learning=False)
    vetoed = evaluate_split(config, prepared, AlwaysLong(), "test", state=state)
    first_decision = max(prepared.market.features.warmup + config.env.window - 1, test.start)
    assert bare.metrics.bars == test.end - 1 - first_decision  # start to end, no random start
    assert bare.metrics.exposure > 0.9
    assert vetoed.metrics.trades == 0
    assert vetoed.metrics.exposure == 0.0
    assert vetoed.metrics.vetoes > 0


def test_evaluation_is_reproducible(learning_run: RunResult) -> None:
    config = learning_run.config
    prepared = prepare_data(config)
    model = load_model("ppo", RunPaths(learning_run.run_dir).model)
    a = evaluate_split(config, prepared, model, "validation", learning=False)
    b = evaluate_split(config, prepared, model, "validation", learning=False)
    assert np.array_equal(a.equity, b.equity)


def test_a_split_too_short_for_an_episode_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data\.splits\.train.*needs 100000"):
        train(tiny(overrides={"env.episode_length": 100_000}), runs_dir=tmp_path)
    assert not any(tmp_path.iterdir())


# --- hosted envs and manager ---------------------------------------------------------------------------


def test_a_hosted_run_trains_the_same_model_and_learns_the_same_state_as_in_one_process(
    learning_run: RunResult, tmp_path: Path
) -> None:
    """``train.vec_env: hosted`` (envs and manager in a host process) changes where, not what."""
    (hosted,) = train(tiny(overrides={"train.vec_env": "hosted"}, name="shared"), runs_dir=tmp_path)
    first, second = RunPaths(learning_run.run_dir), RunPaths(hosted.run_dir)
    assert policy_digest(load_model("ppo", first.model)) == policy_digest(load_model("ppo", second.model))
    assert first.metrics.read_text(encoding="utf-8") == second.metrics.read_text(encoding="utf-8")
    assert first.learned_state.read_text(encoding="utf-8") == second.learned_state.read_text(encoding="utf-8")
    assert json.loads(second.learned_state.read_text(encoding="utf-8"))["version"] > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def scalars(paths: RunPaths) -> dict[str, list[float]]:
        accumulator = EventAccumulator(str(next(paths.tensorboard.iterdir())))
        accumulator.Reload()
        return {
            tag: [e.value for e in accumulator.Scalars(tag)]
            for tag in accumulator.Tags()["scalars"]
            if tag.startswith(("learning/", "trading/"))
        }

    logged = scalars(second)
    assert any(t.startswith("learning/") for t in logged)  # (no episode ends in this tiny budget)
    assert logged == scalars(first)


def test_a_hosted_run_checkpoints_its_learning_store_and_resumes(tmp_path: Path) -> None:
    overrides = {"train.vec_env": "hosted", "train.n_envs": 2, "train.checkpoint_every": 64}
    (result,) = train(tiny(overrides=overrides, name="hosted"), runs_dir=tmp_path)
    paths = RunPaths(result.run_dir)
    latest = json.loads((paths.checkpoints / "latest.json").read_text(encoding="utf-8"))
    assert (paths.checkpoints / latest["dir"] / "learning" / "state.sqlite").is_file()
    resumed = resume_run(paths.root, timesteps=256)
    assert resumed.metrics["timesteps"] == 256
    from learning.manager import UniversalLearningManager

    with UniversalLearningManager(paths.root, read_only=True, create=False) as manager:
        assert manager.describe()["trades"] > 0
