"""Fuzzed `--config.*` overrides of the train configs (their `:smoke` variants): every
generated invocation either passes validation with a sane config (no NaN or infinity in
any float field) or fails with exactly one line, exit code 2, no traceback, and nothing
written where its --workdir points.

The values are mostly invalid or at the edge (wrong types, negative, zero, huge, unknown
choices, NaN and infinity strings, empty text), for one to three fields at a time. Each
case calls `jnorm.main.main(argv)` in-process and stops right after
`jnorm.training.config.validate` passes (before any data is loaded or anything is built),
so a case takes milliseconds; `test_valid_overrides_train` trains a handful of valid
overrides for real. Two tiers: the hypothesis profile below runs a few dozen cases
(`FAST_EXAMPLES`) unmarked, and `@pytest.mark.slow` at least 500.
"""

import math
import os
import shutil
import tempfile

from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import ml_collections
import pytest

import reliability_util as ru
from jnorm import jobs
from jnorm.training import config as train_config

CONFIGS = ["default.py:smoke", "spherical.py:smoke", "simclr.py:smoke", "simsiam.py:smoke",
           "byol.py:smoke"]
CONFIG_DIR = os.path.join(ru.ROOT, "configs")
FAST_EXAMPLES = 40
SLOW_EXAMPLES = 500

BAD_TEXT = ["", " ", "abc", "None", "NaN", "no_such_choice", "1,2", "[1]", "{}", "\x00"]
BAD_NUMBERS = ["nan", "-nan", "inf", "-inf", "1e309", "-1e309", "-1", "0", "-0.0", "1.5",
               "1e-320", "99999999999999999999", "-2147483649", "0x10", "1_000"]
BAD_TUPLES = ["(", "()", "(-1,)", "(0,)", "(nan,)", "(1e12,)", "('a',)", "((1,),)", "1"]
# Fields that validation leaves alone on purpose (no value of theirs is wrong before
# the run starts): the cluster address is checked when jax.distributed connects.
NOT_FUZZED = {"distributed.coordinator_address", "distributed.num_processes",
              "distributed.process_id"}


def _leaves(config, prefix=""):
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      yield from _leaves(value, f"{prefix}{key}.")
    else:
      yield f"{prefix}{key}", value


LEAVES = {}
for _spec in CONFIGS:
  _path, _, _arg = _spec.partition(":")
  _loaded = jobs.load_config_file(os.path.join(CONFIG_DIR, _path), _arg)
  LEAVES[_spec] = sorted((name, value) for name, value in _leaves(_loaded)
                         if name not in NOT_FUZZED)


def _values_for(name, value):
  """Edge and invalid values (as command-line text) for the field `name`, whose default
  is `value`."""
  if isinstance(value, bool):
    values = st.sampled_from(["maybe", "2", "-1", "nan", "", "yes please"])
  elif isinstance(value, (int, float)):
    values = st.sampled_from(BAD_NUMBERS + BAD_TEXT[:4])
  elif isinstance(value, tuple):
    values = st.sampled_from(BAD_TUPLES + BAD_TEXT[:3])
  else:
    values = st.one_of(st.sampled_from(BAD_TEXT), st.text(max_size=12))
  return values


@st.composite
def invocations(draw):
  """(config spec, [override flags])."""
  spec = draw(st.sampled_from(CONFIGS))
  fields = draw(st.lists(st.sampled_from(LEAVES[spec]), min_size=1, max_size=3,
                         unique_by=lambda leaf: leaf[0]))
  flags = [f"--config.{name}={draw(_values_for(name, value))}" for name, value in fields]
  return spec, flags


class _Validated(BaseException):
  """Raised by the stand-in of the training that follows a passed validation."""

  def __init__(self, config):
    super().__init__("validated")
    self.config = config


def _stop_after_validation(validate):
  def validate_then_stop(config):
    validate(config)
    raise _Validated(config)
  return validate_then_stop


def _non_finite_floats(config) -> list:
  return [name for name, value in _leaves(config)
          if isinstance(value, float) and not math.isfinite(value)]


def _check(invocation, capsys):
  spec, flags = invocation
  base = tempfile.mkdtemp(prefix="jnorm-fuzz-")
  workdir = os.path.join(base, "w")
  try:
    with pytest.MonkeyPatch.context() as patch:
      patch.setattr(train_config, "validate", _stop_after_validation(train_config.validate))
      try:
        code, _, err = ru.in_process(
            ["--config", os.path.join(CONFIG_DIR, spec), "--workdir", workdir, *flags], capsys)
      except _Validated as passed:
        capsys.readouterr()
        bad = _non_finite_floats(passed.config)
        assert not bad, f"{spec} {flags}: validation accepted non-finite {bad}"
        return
    ru.assert_one_line_error(code, err, 2)
    assert not os.path.exists(workdir), f"{spec} {flags}: wrote {os.listdir(workdir)}"
  finally:
    shutil.rmtree(base, ignore_errors=True)


# Derandomized (the same cases every session, no example database): a failure names
# its case and reproduces. capsys is reset by every case (ru.in_process).
_COMMON = dict(deadline=None, derandomize=True, database=None,
               suppress_health_check=[HealthCheck.function_scoped_fixture,
                                      HealthCheck.too_slow])
settings.register_profile("jnorm-fuzz-fast", max_examples=FAST_EXAMPLES, **_COMMON)
settings.register_profile("jnorm-fuzz-slow", max_examples=SLOW_EXAMPLES, **_COMMON)


@settings(settings.get_profile("jnorm-fuzz-fast"))
@given(invocation=invocations())
def test_fuzzed_overrides_fail_in_one_line_or_validate(invocation, capsys):
  _check(invocation, capsys)


# One case of each class of bad value the fuzzing found passing validation (then failing
# with a traceback, or never checked): each is now rejected in validation, in one line.
FOUND = [["--config.data.train_classes=('a',)"], ["--config.model.projector_dims=((1,),)"],
         ["--config.model.mlp_features=(1.5,)"], ["--config.norm.gradscale_power=nan"],
         ["--config.loss.temperature=inf"], ["--config.seed=-1"]]


@pytest.mark.parametrize("flags", FOUND, ids=[" ".join(f) for f in FOUND])
def test_the_classes_the_fuzzing_found_are_rejected_in_validation(flags, tmp_path, capsys):
  workdir = str(tmp_path / "w")
  code, _, err = ru.in_process(
      ["--config", os.path.join(CONFIG_DIR, "spherical.py:smoke"), "--workdir", workdir,
       *flags], capsys)
  ru.assert_one_line_error(code, err, 2, flags[0].split("=")[0].removeprefix("--"))
  assert not os.path.exists(workdir)


@pytest.mark.slow
@settings(settings.get_profile("jnorm-fuzz-slow"))
@given(invocation=invocations())
def test_many_fuzzed_overrides(invocation, capsys):
  _check(invocation, capsys)


# Valid edge overrides, trained for real (spherical smoke: 2 steps of an MLP).
VALID = [["--config.seed=123456789"], ["--config.log_every_steps=1000000"],
         ["--config.eval.knn_k=1", "--config.optim.warmup_epochs=0"],
         ["--config.num_epochs=1e-9"]]


@pytest.mark.slow
@pytest.mark.parametrize("flags", VALID, ids=[" ".join(f) for f in VALID])
def test_valid_overrides_train(flags, tmp_path, capsys):
  workdir = str(tmp_path / "w")
  code, out, err = ru.in_process(
      ["--config", os.path.join(CONFIG_DIR, "spherical.py:smoke"), "--workdir", workdir,
       *flags], capsys)
  assert code == 0 or (code == 2 and len(err.strip().splitlines()) == 1), err[-3000:]
  if code == 0:
    assert "job 'train' finished" in out
    assert os.path.exists(os.path.join(workdir, "results.json"))
