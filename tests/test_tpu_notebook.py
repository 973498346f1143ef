"""notebooks/04_colab_tpu.ipynb top to bottom on CPU: its RUNTIME='cpu' path.

The kernel starts with 8 simulated CPU devices (XLA_FLAGS in its environment, so before
jax is imported) and JNORM_REPO pointing at this checkout, so the install cell takes its
local-checkout branch and finds jnorm already installed from here (no pip, no network).
The notebook runs the comparison at smoke size on digits, every sub-run data-parallel over
the 8 devices (gathered negatives, synced BatchNorm); this test checks what each part left
behind. Its check that a data-parallel step equals one device's runs on TPU only: on CPU
tests/training/test_train_step.py tests that property (1 device against 4).

The install cell's wheel path (a jnorm-*.whl and configs.zip uploaded to the working
folder, as its markdown says) runs in a fresh virtual environment without jnorm
(tests/test_packaging.py's `fresh_venv`, offline: the dependencies come from this venv):
the settings, install and config cells as one script there, not the whole notebook in a
kernel (the training cells are the same on both paths). Which source the cell picks
(`install_source`) is checked on its own, cheaply.
"""

import ast
import glob
import json
import os
import pathlib
import shutil
import subprocess
import sys

import nbformat
import pytest

from test_packaging import build_wheel, clean_env, fresh_venv  # pylint: disable=g-bad-import-order

pytestmark = [
    # jupyter_client / zmq emit these while starting and stopping kernels; not ours.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::RuntimeWarning:zmq.*"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "notebooks", "04_colab_tpu.ipynb")

_PROBE = """import json, sys
print(json.dumps({"executable": sys.executable, "devices": jax.device_count(),
                  "backend": jax.default_backend(), "src": SRC, "configs": CONFIGS,
                  "workdir": WORKDIR,
                  "data_parallel_ok": DATA_PARALLEL_OK, "files": sorted(os.listdir(WORKDIR)),
                  "headline": headline}))"""


def _text(cell) -> str:
  return "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")


@pytest.mark.slow
def test_tpu_notebook_runs_on_eight_cpu_devices(tmp_path):
  import nbclient  # pylint: disable=g-import-not-at-top
  nb = nbformat.read(NOTEBOOK, as_version=4)
  sources = [c.source for c in nb.cells]
  nb.cells.append(nbformat.v4.new_code_cell(_PROBE))
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu", JNORM_REPO=ROOT, JNORM_WHEEL="", JNORM_CONFIGS="",
             JNORM_NOTEBOOK_RUNTIME="cpu", MPLBACKEND="Agg")
  client = nbclient.NotebookClient(
      nb, timeout=300, kernel_name="python3",
      resources={"metadata": {"path": str(tmp_path)}})
  client.execute(env=env)

  probe = json.loads(_text(nb.cells[-1]))
  assert os.path.realpath(probe["executable"]) == os.path.realpath(sys.executable)
  assert probe["backend"] == "cpu" and probe["devices"] == 8
  # The install cell ran its local-checkout branch and skipped pip.
  install = next(c for c, s in zip(nb.cells, sources)
                 if c.cell_type == "code" and "pip install" in s)
  assert f"jnorm is already installed from {ROOT}" in _text(install)
  assert "$" not in _text(install)  # no command ran
  assert os.path.realpath(probe["src"]) == os.path.realpath(ROOT)
  assert probe["configs"] == os.path.join(ROOT, "configs")
  # On CPU the data-parallel check is left to tests/training/test_train_step.py.
  check = next(c for c, s in zip(nb.cells, sources) if "DATA_PARALLEL_OK = True" in s)
  assert probe["data_parallel_ok"] is None and "test_train_step.py" in _text(check)
  # The comparison ran every variant and wrote the table and figures in the kernel's cwd.
  assert probe["workdir"].startswith(os.path.realpath(str(tmp_path)))
  for name in ("comparison.md", "results.json", "knn_accuracy_vs_epoch.png",
               "norm_vs_epoch.png", "default", "cut3"):
    assert name in probe["files"], name
  with open(os.path.join(probe["workdir"], "default", "seed0", "config.json")) as f:
    run_config = json.load(f)["config"]
  assert run_config["negatives"] == "global" and run_config["sync_batchnorm"] is True
  with open(os.path.join(probe["workdir"], "default", "seed0", "results.json")) as f:
    assert json.load(f)["num_devices"] == 8
  assert 0.0 <= probe["headline"]["default/knn_accuracy"] <= 1.0
  figures = next(c for c, s in zip(nb.cells, sources) if "display(Image" in s)
  assert sum("image/png" in o.get("data", {}) for o in figures.outputs) == 2


def _code_cell(nb, text: str) -> str:
  return next(c.source for c in nb.cells if c.cell_type == "code" and text in c.source)


def _install_source():
  """The install cell's `install_source`, defined on its own (the cell would install)."""
  cell = _code_cell(nbformat.read(NOTEBOOK, as_version=4), "def install_source")
  node = next(n for n in ast.parse(cell).body
              if isinstance(n, ast.FunctionDef) and n.name == "install_source")
  namespace = {"glob": glob, "os": os}
  exec(compile(ast.Module(body=[node], type_ignores=[]), NOTEBOOK, "exec"), namespace)  # pylint: disable=exec-used
  return namespace["install_source"]


def test_install_source_takes_wheel_then_repo_then_an_uploaded_wheel(tmp_path):
  install_source = _install_source()
  folder = str(tmp_path)
  with pytest.raises(FileNotFoundError, match="0 jnorm-"):
    install_source("", "", folder)
  uploaded = tmp_path / "jnorm-0.1.0-py3-none-any.whl"
  uploaded.write_bytes(b"")
  assert install_source("", "", folder) == ("wheel", str(uploaded))
  assert install_source("", "https://example.org/jnorm.git", folder) == (
      "repo", "https://example.org/jnorm.git")
  assert install_source("/x/jnorm-0.2.0-py3-none-any.whl", "/checkout", folder) == (
      "wheel", "/x/jnorm-0.2.0-py3-none-any.whl")
  (tmp_path / "jnorm-0.0.9-py3-none-any.whl").write_bytes(b"")
  with pytest.raises(FileNotFoundError, match="2 jnorm-"):
    install_source("", "", folder)  # which one is meant is not guessed


_WHEEL_PROBE = """
import json, jnorm
print("PROBE", json.dumps({"kind": KIND, "src": SRC, "configs": CONFIGS, "jnorm": jnorm.__file__,
                           "variants": config.run_variants,
                           "negatives": config.base.negatives}))
"""


@pytest.mark.slow
def test_tpu_notebook_installs_jnorm_from_an_uploaded_wheel(tmp_path):
  nb = nbformat.read(NOTEBOOK, as_version=4)
  script = "\n\n".join([_code_cell(nb, "SMALL = True"), _code_cell(nb, "def install_source"),
                         _code_cell(nb, "load_config_file"), _WHEEL_PROBE])
  wheel = build_wheel(tmp_path / "build")
  python, site_packages = fresh_venv(tmp_path / "venv")
  content = tmp_path / "content"  # Colab's /content, where the Files pane uploads to
  content.mkdir()
  shutil.copy2(wheel, content / wheel.name)
  # As the notebook's markdown says to make it (in the repository).
  subprocess.run([sys.executable, "-m", "zipfile", "-c", str(content / "configs.zip"),
                  "configs/"], cwd=ROOT, check=True, timeout=60)
  result = subprocess.run(
      [str(python), "-c", script], cwd=content, capture_output=True, text=True, timeout=300,
      check=False, env=clean_env(JNORM_NOTEBOOK_RUNTIME="cpu", JAX_PLATFORMS="cpu"))
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  probe = json.loads(result.stdout.split("PROBE ", 1)[1])
  assert probe["kind"] == "wheel" and probe["src"] == str(content / wheel.name)
  assert pathlib.Path(probe["jnorm"]).resolve().is_relative_to(site_packages.resolve())
  assert "--no-deps --force-reinstall" in result.stdout  # pip ran (offline: PIP_NO_INDEX)
  assert probe["configs"] == str(content / "configs")
  assert (content / "configs" / "common.py").is_file()  # unpacked from configs.zip
  assert probe["variants"] == "default,cut3" and probe["negatives"] == "global"  # :smoke
