"""jnorm.training.config: defaults, validation messages, saving a config with a run."""

import json

import pytest

from jnorm import errors
from jnorm.training import config as train_config


def test_defaults_validate():
  config = train_config.defaults()
  train_config.validate(config)
  assert config.method == "simclr" and config.eval.bn_stats == "recompute"


@pytest.mark.parametrize("field, value, match", [
    ("optim.lrr", 0.1, r"config\.optim\.lrr is not a known field"),
    ("epochs", 3, r"config\.epochs is not a known field"),
    ("model.width", 3, r"config\.model\.width is not a known field"),
    ("eval.bn_stats", "fresh", r"config\.eval\.bn_stats='fresh'"),
    ("eval.bn_images", -1, r"config\.eval\.bn_images=-1 must be an integer >= 0"),
    ("eval.bank_images", -5, r"config\.eval\.bank_images=-5 must be an integer >= 0"),
    ("eval.train_mode_norms", "never", r"config\.eval\.train_mode_norms='never'"),
    ("method", "swav", r"config\.method='swav'"),
    ("negatives", "all", r"config\.negatives='all'"),
    ("batch_size", 0, r"config\.batch_size=0 must be > 0"),
    ("norm.cut_factor", 0.0, r"config\.norm\.cut_factor"),
    ("norm.gradscale_form", "hook", r"config\.norm\.gradscale_form"),
    ("optim.name", "adam", r"config\.optim\.name='adam'"),
])
def test_validate_names_the_bad_field_in_one_line(field, value, match):
  config = train_config.defaults()
  *parents, leaf = field.split(".")
  target = config
  for parent in parents:
    target = target[parent]
  with target.unlocked():
    target[leaf] = value
  with pytest.raises(errors.ConfigError, match=match) as info:
    train_config.validate(config)
  assert "\n" not in str(info.value)


def test_saved_config_round_trips_through_json():
  config = train_config.defaults()
  config.norm.cut_factor, config.model.projector_dims = 3.0, (64, 32)
  info = {"input_shape": (8, 8, 1), "steps_per_epoch": 20}
  saved = json.loads(json.dumps(train_config.to_saved(config, info)))
  loaded, loaded_info = train_config.from_saved(saved)
  assert loaded_info == {"input_shape": (8, 8, 1), "steps_per_epoch": 20}
  assert loaded.norm.cut_factor == 3.0 and tuple(loaded.model.projector_dims) == (64, 32)
  assert loaded.to_dict().keys() == config.to_dict().keys()
  train_config.validate(loaded)
