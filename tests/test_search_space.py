"""Search spaces are checked before any trial starts; errors name the key."""

import pytest

from conlst_ray.config import Config, ConfigError
from conlst_ray.config.search_space import apply, parse_search_space


def test_every_distribution_parses():
    dims = parse_search_space({
        "conl.gamma": {"type": "uniform", "low": 0.7, "high": 0.95},
        "conl.lambda_clcs": {"type": "loguniform", "low": 1e-4, "high": 1e-2},
        "conl.num_negatives": {"type": "randint", "low": 4, "high": 16},
        "conl.lr": {"type": "choice", "values": [2e-6, 5e-6]},
        "ssl.lr": {"type": "grid", "values": [1e-4, 2e-4]},
        "conl.tau": {"type": "uniform", "low": 0.1, "high": 1.0},
        "ssl.mixup_alpha": {"type": "choice", "values": [2.0, 4.0]},
    }, Config())
    assert [d.kind for d in dims] == ["uniform", "loguniform", "randint", "choice", "grid", "uniform", "choice"]


@pytest.mark.parametrize("space, message", [
    ({"conl.gamma": {"type": "normal", "low": 0, "high": 1}},
     "tune.search_space.conl.gamma: unknown distribution 'normal'"),
    ({"conl.gamma": {"type": "uniform", "low": 0.9, "high": 0.5}},
     r"tune.search_space.conl.gamma: low \(0.9\) must be below high \(0.5\)"),
    ({"conl.lambda_clcs": {"type": "loguniform", "low": 0, "high": 1}}, "loguniform needs low > 0"),
    ({"conl.gama": {"type": "uniform", "low": 0.5, "high": 0.9}},
     "unknown config key 'conl.gama'; did you mean 'conl.gamma'"),
    ({"conl.gamma": {"type": "uniform", "low": 0.5}}, r"missing \['high'\]"),
    ({"conl.gamma": {"type": "uniform", "low": 0.5, "high": 1.5}}, r"conl.gamma: value 1.5 is invalid"),
    ({"conl.num_negatives": {"type": "choice", "values": []}}, "non-empty list"),
    ({"conl.num_negatives": {"type": "randint", "low": 0, "high": 4}}, "value 0.0 is invalid"),
    # a real-valued draw on an integer key would only fail when a trial applies it
    ({"conl.num_negatives": {"type": "uniform", "low": 2, "high": 8}},
     "'uniform' draws real numbers but conl.num_negatives is an integer"),
    ({"data.max_rows": {"type": "loguniform", "low": 10, "high": 100}}, "data.max_rows is an integer"),
])
def test_malformed_entries_fail_naming_the_key(space, message):
    with pytest.raises(ConfigError, match=message):
        parse_search_space(space, Config())


def test_apply_sets_dotted_keys_and_keeps_types():
    cfg = apply(Config(), {"conl.num_negatives": 12.0, "ssl.lr": 3e-4, "run_name": "x"})
    assert cfg.conl.num_negatives == 12 and isinstance(cfg.conl.num_negatives, int)
    assert cfg.ssl.lr == 3e-4 and cfg.run_name == "x"


def test_tune_cli_rejects_a_bad_space_before_starting_ray(tmp_path, capsys):
    import ray

    from conlst_ray.commands import tune as tune_cli

    was_running = ray.is_initialized()
    code = tune_cli.main([f"output_dir={tmp_path}",
                          "tune.search_space={conl.gamma: {type: uniform, low: 0.9, high: 0.1}}"])
    assert code == 2 and "tune.search_space.conl.gamma" in capsys.readouterr().err
    assert ray.is_initialized() == was_running and not list(tmp_path.iterdir())


@pytest.mark.parametrize("n", ["0", "-3"])
def test_num_samples_on_the_command_line_is_checked_like_the_key(tmp_path, capsys, n):
    import ray

    from conlst_ray.commands import tune as tune_cli

    was_running = ray.is_initialized()
    assert tune_cli.main([f"output_dir={tmp_path}", "--num-samples", n]) == 2
    assert "tune.num_samples" in capsys.readouterr().err and ray.is_initialized() == was_running


def test_demo_config_space_is_the_built_in_default():
    from pathlib import Path

    from conlst_ray.commands.tune import DEFAULT_SPACE
    from conlst_ray.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "tune_configs" / "demo.yaml")
    assert cfg.tune.search_space == DEFAULT_SPACE
    assert len(parse_search_space(cfg.tune.search_space, cfg)) == 4


def test_a_search_is_interrupted_until_every_expected_trial_has_ended():
    from conlst_ray.commands.tune import expected_trials, interrupted

    cfg = apply(Config(), {"tune.num_samples": 2})
    dims = parse_search_space({"conl.gamma": {"type": "grid", "values": [0.8, 0.9, 0.95]},
                               "conl.num_negatives": {"type": "choice", "values": [4, 8]}}, cfg)
    assert expected_trials(cfg, dims) == 6                          # 2 samples x 3 grid points

    class Results(list):
        def __init__(self, n, terminated, errors=0):
            super().__init__(range(n))
            self.num_terminated, self.num_errors = terminated, errors

    assert not interrupted(Results(6, 5, 1), cfg, dims)             # all ended (one errored)
    assert interrupted(Results(6, 5), cfg, dims)                    # one still running when stopped
    assert interrupted(Results(4, 4), cfg, dims)                    # stopped before the last trials existed
