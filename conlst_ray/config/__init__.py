"""The typed configuration (pydantic): sections.py (every key, its range,
help and metadata), loading.py (YAML, overrides, one-line errors, paths,
--help), keys.py (the keys as data), provenance.py (what made an artefact:
config keys by stage, input stamps), search_space.py (the Tune search space
over the keys, checked like them), stages.py (the pipeline's stages as
data: one record each)."""

from conlst_ray.config.loading import (
    FILE_FORMATS,
    NAMED_MODELS,
    config_from_dict,
    config_help,
    load_config,
    parse_override,
    read_yaml,
    save_config,
    to_dict,
    with_values,
)
from conlst_ray.config.sections import (
    Config,
    ConfigError,
    CoNLConfig,
    DataConfig,
    ModelConfig,
    ResourcesConfig,
    SourceTrainConfig,
    SSLConfig,
    SyntheticConfig,
    TaskConfig,
    TinyModelConfig,
    TranslationConfig,
    TuneConfig,
)

__all__ = ["Config", "ConfigError", "CoNLConfig", "DataConfig", "ModelConfig", "ResourcesConfig", "SSLConfig",
           "SourceTrainConfig", "SyntheticConfig", "TaskConfig", "TinyModelConfig", "TranslationConfig",
           "TuneConfig", "FILE_FORMATS", "NAMED_MODELS", "config_from_dict", "config_help", "load_config",
           "parse_override", "read_yaml", "save_config", "to_dict", "with_values"]
