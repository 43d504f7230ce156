import pytest
import yaml

from conlst_ray.config import Config, ConfigError, config_help, load_config, save_config


def write(tmp_path, text, name="c.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults_are_valid_and_match_the_paper_where_it_fixes_them():
    cfg = load_config()
    assert isinstance(cfg, Config)
    assert cfg.conl.lambda_clcs == 0.001  # Eq. 8
    assert cfg.ssl.mixup_alpha == 4.0     # Eq. 11
    assert cfg.ssl.lambda_u == 1.0        # Eq. 12-13
    assert cfg.conl.epochs == 1


def test_precedence_defaults_then_file_then_overrides(tmp_path):
    p = write(tmp_path, "conl:\n  gamma: 0.7\n  num_negatives: 4\nseed: 3\n")
    cfg = load_config(p, ["conl.gamma=0.8", "data.target_langs=[fr, de]"])
    assert cfg.conl.gamma == 0.8           # override beats file
    assert cfg.conl.num_negatives == 4     # file beats default
    assert cfg.seed == 3
    assert cfg.conl.tau == Config().conl.tau  # untouched default
    assert cfg.data.target_langs == ["fr", "de"]


def test_int_given_for_float_is_accepted_and_bool_is_not_an_int():
    assert load_config(None, ["conl.lr=1"]).conl.lr == 1.0
    with pytest.raises(ConfigError, match="conl.num_negatives"):
        load_config(None, ["conl.num_negatives=true"])


def test_misspelt_key_names_it_and_suggests_the_closest(tmp_path):
    p = write(tmp_path, "conl:\n  gama: 0.9\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    msg = str(err.value)
    assert "conl.gama" in msg and "conl.gamma" in msg and str(p) in msg
    with pytest.raises(ConfigError, match="did you mean 'ssl.mixup_alpha'"):
        load_config(None, ["ssl.mixup_alph=2"])
    with pytest.raises(ConfigError, match="unknown config key 'conlx'"):
        load_config(None, ["conlx.gamma=0.5"])


@pytest.mark.parametrize("override, key, allowed", [
    ("conl.gamma=1.5", "conl.gamma", "(0.0, 1.0]"),
    ("conl.gamma=0", "conl.gamma", "(0.0, 1.0]"),
    ("conl.num_negatives=0", "conl.num_negatives", "[1, inf)"),
    ("conl.lambda_clcs=-0.1", "conl.lambda_clcs", "[0.0, inf)"),
    ("conl.lr=0", "conl.lr", "(0.0, inf)"),
    ("source.lr=-1e-5", "source.lr", "(0.0, inf)"),
    ("ssl.lr=0", "ssl.lr", "(0.0, inf)"),
    ("ssl.mixup_alpha=0", "ssl.mixup_alpha", "(0.0, inf)"),
    ("conl.tau=0", "conl.tau", "(0.0, inf)"),
])
def test_out_of_range_values_name_key_and_range(override, key, allowed):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert key in str(err.value) and allowed in str(err.value)


def test_gamma_out_of_range_in_a_file_is_rejected(tmp_path):
    p = write(tmp_path, "conl:\n  gamma: 1.5\n")
    with pytest.raises(ConfigError, match=r"conl\.gamma = 1\.5 is out of range"):
        load_config(p)


def test_choices_types_and_malformed_overrides():
    with pytest.raises(ConfigError, match="model.pooling"):
        load_config(None, ["model.pooling=max"])
    with pytest.raises(ConfigError, match="conl.gamma: expected float"):
        load_config(None, ["conl.gamma=high"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["conl.gamma"])
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(None, ["conl=3"])


@pytest.mark.parametrize("override, key", [
    ("conl.gamma=nan", "conl.gamma"), ("source.lr=.inf", "source.lr"), ("conl.tau=1e400", "conl.tau"),
    ("ssl.lr=-.inf", "ssl.lr"),
])
def test_non_finite_floats_are_rejected_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=rf"{key} = .* is not a finite number"):
        load_config(None, [override])


@pytest.mark.parametrize("override", ["seed=-5", f"seed={2**32}", "data.synthetic.seed=-1"])
def test_seeds_outside_numpys_range_are_rejected_naming_the_key(override):
    with pytest.raises(ConfigError, match=rf"{override.split('=')[0]} = .* out of range"):
        load_config(None, [override])


def test_a_key_given_twice_in_a_yaml_file_names_both_lines(tmp_path):
    p = write(tmp_path, "conl:\n  gamma: 0.8\n  tau: 0.5\n  gamma: 0.6\n")
    with pytest.raises(ConfigError, match=r"c.yaml: key 'gamma' appears twice, lines 2 and 4"):
        load_config(p)
    with pytest.raises(ConfigError, match="'conl' appears twice, lines 1 and 3"):
        load_config(write(tmp_path, "conl:\n  gamma: 0.8\nconl:\n  tau: 0.5\n"))


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(write(tmp_path, "conl: [\n"))


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(None, ["conl.gamma=0.75", "data.target_langs=[fr]",
                             "tune.search_space={conl.gamma: {type: uniform, low: 0.5, high: 0.9}}"])
    save_config(cfg, tmp_path / "resolved.yaml")
    again = load_config(tmp_path / "resolved.yaml")
    assert again == cfg
    assert yaml.safe_load((tmp_path / "resolved.yaml").read_text())["conl"]["gamma"] == 0.75
    assert not list(tmp_path.glob(".*tmp"))  # written atomically, no leftovers


def test_help_lists_every_key_with_range():
    text = "\n".join(config_help())
    assert "conl.gamma=0.9 gt0.0 le1.0" in text
    assert "data.on_malformed='raise' {raise|skip}" in text


def test_learning_rate_in_exponent_notation_from_yaml(tmp_path):
    # PyYAML parses 2e-6 (no dot) as a string; the paper's rates are written so.
    cfg = load_config(write(tmp_path, "conl:\n  lr: 2e-6\n"))
    assert cfg.conl.lr == 2e-6


def test_every_shipped_config_file_loads():
    from pathlib import Path

    files = sorted((Path(__file__).resolve().parents[1] / "tune_configs").glob("*.yaml"))
    assert len(files) >= 3
    for path in files:
        load_config(path)


def test_relative_paths_become_absolute_because_ray_workers_run_elsewhere(tmp_path, monkeypatch):
    """Ray Train workers start in a directory of their own (measured:
    /tmp/ray/session_*/artifacts/<run>), so a relative path would miss there."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "vocab.txt").write_text("[PAD]\n")
    cfg = load_config(None, ["output_dir=out", "data.target_train=xnli_tsv:data/dev-{lang}.tsv",
                             "data.source_dev=hf:facebook/xnli:en:validation", "model.tokenizer=vocab.txt",
                             "model.name_or_path=xlm-roberta-large", "translation.model=synthetic"])
    assert cfg.output_dir == str(tmp_path / "out")
    assert cfg.data.target_train == f"xnli_tsv:{tmp_path}/data/dev-{{lang}}.tsv"
    assert cfg.data.source_dev == "hf:facebook/xnli:en:validation"          # hub ids and names stay
    assert cfg.data.source_train == "synthetic:train"
    assert cfg.model.tokenizer == str(tmp_path / "vocab.txt")
    assert cfg.model.name_or_path == "xlm-roberta-large" and cfg.translation.model == "synthetic"
