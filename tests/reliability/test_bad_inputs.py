"""Malformed invocations: each gives its exit code, exactly one stderr line naming the
problem and the fix, no traceback, and writes nothing into the workdir.

Most cases run in-process (`jnorm.main.main(argv)`, milliseconds each); a representative
subset also runs as `python -m jnorm.main` subprocesses, started together.
"""

import errno
import gzip
import os
import shutil
import subprocess
import sys

import pytest

import reliability_util as ru
from jnorm import json_files
from jnorm.training import checkpoint

CONFIG_FILES = {
    "syntax.py": "import ml_collections\ndef get_config(:\n  pass\n",
    "imports.py": "import no_such_module_xyz\n\ndef get_config():\n  return None\n",
    "raises.py": "def get_config():\n  raise RuntimeError('boom')\n",
    "no_get_config.py": "CONFIG = {}\n",
    "returns_dict.py": "def get_config():\n  return {'job': 'train'}\n",
    "returns_none.py": "def get_config():\n  pass\n",
    "unknown_field.py": ("import tiny_config\n\ndef get_config():\n"
                         "  c = tiny_config.get_config()\n  c.learning_rate = 0.1\n  return c\n"),
    "missing_fields.py": ("import ml_collections\n\ndef get_config():\n"
                          "  return ml_collections.ConfigDict({'job': 'train'})\n"),
}

# (id, CLI arguments, exit code, substrings of the error line: the problem and the fix).
# {cfg}: a folder of broken config files, {tiny}: tests/reliability/tiny_config.py,
# {w}: the workdir (absent), {file}: an existing file. Without --config / --workdir
# the case gets `--config {tiny}` / `--workdir {w}`.
CASES = [
    # config files
    ("config-missing", ["--config", "{cfg}/missing.py"], 2,
     ["missing.py does not exist", "pass a config .py file"]),
    ("config-is-a-directory", ["--config", "{cfg}"], 2, ["is a directory", "pass a config"]),
    ("config-binary", ["--config", "{cfg}/binary.py"], 2,
     ["binary.py has a syntax error", "fix the file"]),
    ("config-syntax-error", ["--config", "{cfg}/syntax.py"], 2,
     ["syntax.py has a syntax error at line 2", "fix the file"]),
    ("config-import-error", ["--config", "{cfg}/imports.py"], 2,
     ["imports.py (line 1) cannot import", "no_such_module_xyz", "install"]),
    ("config-get-config-raises", ["--config", "{cfg}/raises.py"], 2,
     ["raises.py: get_config() (line 2) raised RuntimeError: boom", "fix the file"]),
    ("config-no-get-config", ["--config", "{cfg}/no_get_config.py"], 2,
     ["defines no get_config()", "add `def get_config(arg=None)`"]),
    ("config-returns-dict", ["--config", "{cfg}/returns_dict.py"], 2,
     ["returned dict, not an ml_collections.ConfigDict", "return one"]),
    ("config-returns-none", ["--config", "{cfg}/returns_none.py"], 2,
     ["returned NoneType", "return one"]),
    ("config-bad-argument", ["--config", "{tiny}:huge"], 2,
     ["tiny_config.py: get_config('huge')", "unknown argument 'huge'", "use none"]),
    ("config-unknown-field-in-file", ["--config", "{cfg}/unknown_field.py"], 2,
     ["config.learning_rate is not a known field", "use one of"]),
    ("config-missing-fields", ["--config", "{cfg}/missing_fields.py"], 2,
     ["config.augment is missing", "jnorm.training.config.defaults()"]),
    # flags
    ("no-config-flag", ["--workdir", "{w}", "NO_CONFIG"], 2,
     ["--config is required", "--config configs/default.py"]),
    ("no-workdir-flag", ["NO_WORKDIR"], 2, ["--workdir is required", "--workdir /tmp/"]),
    ("unknown-flag", ["--bogus_flag=1"], 2, ["bogus_flag", "remove it or correct its spelling"]),
    ("unknown-field", ["--config.batch_siz=16"], 2,
     ["no field 'batch_siz'", "did you mean 'batch_size'"]),
    ("unknown-nested-field", ["--config.optim.lr=0.1"], 2,
     ["no field 'optim.lr'", "check its spelling"]),
    # wrong types
    ("type-int-from-text", ["--config.batch_size=abc"], 2,
     ["--config.batch_size=abc", "pass a value of the flag's type"]),
    ("type-int-from-float", ["--config.batch_size=1.5"], 2,
     ["--config.batch_size=1.5", "pass a value of the flag's type"]),
    ("type-float-from-text", ["--config.optim.learning_rate=fast"], 2,
     ["learning_rate=fast", "pass a value"]),
    ("type-bool-from-text", ["--config.progress_bar=maybe"], 2,
     ["progress_bar=maybe", "pass a value"]),
    # out-of-range values
    ("range-batch-size", ["--config.batch_size=0"], 2, ["config.batch_size=0", "must be > 0"]),
    ("range-epochs", ["--config.num_epochs=-1"], 2, ["config.num_epochs=-1.0", "must be > 0"]),
    ("range-learning-rate", ["--config.optim.learning_rate=-0.1"], 2,
     ["optim.learning_rate=-0.1", "must be > 0"]),
    ("range-momentum", ["--config.optim.momentum=-1"], 2, ["optim.momentum=-1.0", "must be >= 0"]),
    ("range-checkpoint-every", ["--config.checkpoint_every_steps=0"], 2,
     ["checkpoint_every_steps=0", "must be > 0"]),
    ("range-knn-k", ["--config.eval.knn_k=0"], 2, ["eval.knn_k=0", "must be > 0"]),
    ("range-test-fraction", ["--config.data.test_fraction=1.5"], 2,
     ["data.test_fraction=1.5", "must be in (0, 1)"]),
    # unknown choices
    ("choice-method", ["--config.method=moco"], 2, ["config.method='moco'", "use one of"]),
    ("choice-optimizer", ["--config.optim.name=adam"], 2, ["optim.name='adam'", "'sgd'"]),
    ("choice-dataset", ["--config.data.name=mnist"], 2, ["data.name='mnist'", "use one of"]),
    ("choice-backbone", ["--config.model.backbone=resnet7"], 2,
     ["model.backbone='resnet7'", "use one of"]),
    ("choice-job", ["--config.job=nojob"], 2, ["config.job='nojob'", "use one of"]),
    # impossible combinations
    ("predictor-with-simclr", ["--config.model.predictor_hidden=8"], 2,
     ["predictor_hidden must be 0 for method 'simclr'", "remove the override"]),
    ("simsiam-without-predictor", ["--config.method=simsiam"], 2,
     ["method 'simsiam' needs a predictor", "set it"]),
    ("batch-larger-than-data", ["--config.batch_size=128"], 2,
     ["batch_size=128 exceeds the 64 train examples", "lower it"]),
    # workdirs
    ("workdir-is-a-file", ["--workdir", "{file}"], 2,
     ["is an existing file, not a directory", "pass a directory path"]),
    ("workdir-under-dev-null", ["--workdir", "/dev/null/x"], 2,
     ["/dev/null/x cannot be created: /dev/null is a file", "pass a directory path"]),
    ("workdir-under-a-file", ["--workdir", "{file}/sub/run"], 2,
     ["cannot be created", "is a file, not a directory"]),
    # datasets that are not prepared
    ("fashion-mnist-empty-dir", ["--config.data.name=fashion_mnist",
                                 "--config.data.data_dir={empty}", "--config.augment=digits"],
     1, ["Fashion-MNIST file", "not found", "set config.data.data_dir"]),
    ("fashion-mnist-corrupt-files", ["--config.data.name=fashion_mnist",
                                     "--config.data.data_dir={corrupt}",
                                     "--config.augment=digits"],
     1, ["cannot be read", "reinstall"]),
    ("cifar10-empty-dir", ["--config.data.name=cifar10", "--config.data.data_dir={empty}",
                           "--config.augment=simclr"],
     1, ["'cifar10' is not prepared", "tfds build cifar10"]),
]


@pytest.fixture(scope="module")
def places(tmp_path_factory):
  """The paths the CASES' placeholders stand for (shared, never written by the cases)."""
  root = tmp_path_factory.mktemp("bad_inputs")
  cfg = root / "configs"
  cfg.mkdir()
  for name, text in CONFIG_FILES.items():
    (cfg / name).write_text(text)
  (cfg / "binary.py").write_bytes(b"\x00\xff\xfe garbage")
  shutil.copy(ru.TINY_CONFIG, cfg / "tiny_config.py")  # unknown_field.py imports it
  (root / "a_file").write_text("not a directory\n")
  (root / "empty").mkdir()
  corrupt = root / "corrupt"
  corrupt.mkdir()
  for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
    (corrupt / name).write_bytes(gzip.compress(b"\x00\x00\x08\x03 truncated")[:12])
  return {"cfg": str(cfg), "tiny": ru.TINY_CONFIG, "file": str(root / "a_file"),
          "empty": str(root / "empty"), "corrupt": str(corrupt)}


def _argv(template, places, workdir):
  argv = [a.format(w=workdir, **places) for a in template]
  if "NO_CONFIG" in argv:
    argv.remove("NO_CONFIG")
  elif "--config" not in argv:
    argv = ["--config", places["tiny"]] + argv
  if "NO_WORKDIR" in argv:
    argv.remove("NO_WORKDIR")
  elif "--workdir" not in argv:
    argv += ["--workdir", workdir]
  return argv


def _untouched(before, after, where):
  assert after == before, f"the invocation wrote into {where}"


@pytest.mark.parametrize("name, template, code, needles", CASES, ids=[c[0] for c in CASES])
def test_bad_invocation(name, template, code, needles, places, tmp_path, capsys):
  del name
  workdir = str(tmp_path / "w")
  argv = _argv(template, places, workdir)
  watched = [workdir] + [p for p in places.values() if os.path.isdir(p)]
  before = [ru.snapshot(p) for p in watched]
  got, _, err = ru.in_process(argv, capsys)
  ru.assert_one_line_error(got, err, code, *needles)
  _untouched(before, [ru.snapshot(p) for p in watched], watched)
  assert not os.path.exists(workdir)


# Workdirs holding a run, damaged in one way each: (id, damage, extra args, code, needles).
def _truncate_state(workdir):
  state = os.path.join(workdir, "checkpoints", str(ru.TOTAL_STEPS), "state")
  for root, _, files in os.walk(state):
    for name in files:
      path = os.path.join(root, name)
      with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def _garble_state(workdir):
  state = os.path.join(workdir, "checkpoints", str(ru.TOTAL_STEPS), "state")
  for root, _, files in os.walk(state):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"garbage")


def _garble_meta(workdir):
  meta = os.path.join(workdir, "checkpoints", str(ru.TOTAL_STEPS), "meta", "metadata")
  with open(meta, "w") as f:
    f.write('{"paths": [')


def _empty_step_dir(workdir):
  os.makedirs(os.path.join(workdir, "checkpoints", str(ru.TOTAL_STEPS + 1)))


def _garble_config_json(workdir):
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write("{not json")


def _drop_config_json(workdir):
  os.remove(os.path.join(workdir, "config.json"))


def _nothing(workdir):
  del workdir


step_dir = os.path.join("checkpoints", str(ru.TOTAL_STEPS))
RUN_CASES = [
    ("checkpoint-truncated", _truncate_state, [], 1,
     [f"{step_dir} is unreadable", "delete that directory"]),
    ("checkpoint-corrupt", _garble_state, [], 1,
     [f"{step_dir} is unreadable", "delete that directory"]),
    ("checkpoint-corrupt-metadata", _garble_meta, [], 1,
     [f"{step_dir} is unreadable", "delete that directory"]),
    ("checkpoint-empty-step-dir", _empty_step_dir, [], 1,
     [os.path.join("checkpoints", str(ru.TOTAL_STEPS + 1)), "delete that directory"]),
    ("config-json-corrupt", _garble_config_json, [], 1,
     ["config.json is unreadable", "fresh --workdir"]),
    ("checkpoint-of-another-config", _nothing, ["--config.model.mlp_features=(32,)"], 2,
     ["written by another config", "model.mlp_features: [16] -> [32]",
      "rerun with the config that wrote it, or use a fresh --workdir"]),
    ("checkpoint-of-another-seed", _nothing, ["--config.seed=1"], 2,
     ["written by another config", "seed: 0 -> 1", "fresh --workdir"]),
    ("checkpoint-of-another-structure", _drop_config_json,
     ["--config.model.mlp_features=(32,)"], 2,
     ["holds the state of another config", "has shape [16] instead of [32]",
      "fresh --workdir"]),
]


@pytest.mark.parametrize("name, damage, extra, code, needles", RUN_CASES,
                         ids=[c[0] for c in RUN_CASES])
def test_bad_workdir_state(name, damage, extra, code, needles, reference_run, copy_of, capsys):
  workdir = copy_of(reference_run, name)
  os.remove(os.path.join(workdir, "results.json"))  # as if killed before the end
  damage(workdir)
  before = ru.snapshot(workdir)
  got, _, err = ru.in_process(ru.tiny_args(workdir, *extra), capsys)
  ru.assert_one_line_error(got, err, code, *needles)
  _untouched(before, ru.snapshot(workdir), workdir)


def test_disk_full_in_the_workdir_is_one_line(tmp_path, monkeypatch, capsys):
  """An OSError about a file in the workdir (here: no space left) while the run writes."""
  def no_space(path, obj):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

  monkeypatch.setattr(json_files, "write_json_atomic", no_space)
  workdir = str(tmp_path / "w")
  got, _, err = ru.in_process(ru.tiny_args(workdir), capsys)
  ru.assert_one_line_error(got, err, 2, f"cannot write {workdir}/config.json",
                           "No space left on device", "writable directory with free space")
  assert checkpoint.LOCK_NAME not in os.listdir(workdir)  # released on the way out


@pytest.fixture
def live_holder():
  """A live process, whose PID a test writes into run.lock."""
  proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
  yield proc
  proc.kill()
  proc.wait()


def _lock(workdir, pid):
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, checkpoint.LOCK_NAME), "w") as f:
    f.write(f"{pid}\n")


def test_second_live_run_is_refused(live_holder, reference_run, copy_of, capsys):
  workdir = copy_of(reference_run)
  _lock(workdir, live_holder.pid)
  before = ru.snapshot(workdir)
  got, _, err = ru.in_process(ru.tiny_args(workdir), capsys)
  ru.assert_one_line_error(got, err, 1, f"in use by a live run (PID {live_holder.pid})",
                           "wait for it to finish, stop it, or use another --workdir")
  _untouched(before, ru.snapshot(workdir), workdir)


SUBPROCESS_CASES = ["config-syntax-error", "workdir-under-dev-null"]


def test_representative_cases_as_subprocesses(places, reference_run, copy_of, cli_env,
                                              tmp_path):
  """The same one-line errors from `python -m jnorm.main` (absl's own parsing, logging,
  interpreter exit): a config file, a workdir, a damaged checkpoint. (The lock and an
  unknown field run as subprocesses in the training CLI and main tests.)"""
  by_id = {c[0]: c for c in CASES}
  runs = []
  for name in SUBPROCESS_CASES:
    _, template, code, needles = by_id[name]
    workdir = str(tmp_path / name)
    runs.append((name, workdir, _argv(template, places, workdir), code, needles))
  corrupt = copy_of(reference_run, "corrupt")
  os.remove(os.path.join(corrupt, "results.json"))
  _garble_state(corrupt)
  runs.append(("checkpoint-corrupt", corrupt, ru.tiny_args(corrupt), 1,
               [f"{step_dir} is unreadable", "delete that directory"]))
  before = {name: ru.snapshot(w) for name, w, *_ in runs}
  procs = [(run, subprocess.Popen([sys.executable, "-m", "jnorm.main", *run[2]], env=cli_env,
                                  cwd=ru.ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)) for run in runs]
  for (name, workdir, _, code, needles), proc in procs:
    _, err = proc.communicate(timeout=300)
    ru.assert_one_line_error(proc.returncode, err, code, *needles)
    _untouched(before[name], ru.snapshot(workdir), workdir)
