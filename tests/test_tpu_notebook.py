"""notebooks/04_colab_tpu.ipynb top to bottom on CPU: its RUNTIME='cpu' path.

The kernel starts with 8 simulated CPU devices (XLA_FLAGS in its environment, so before
jax is imported) and JNORM_REPO pointing at this checkout, so the install cell takes its
local-checkout branch and finds jnorm already installed from here (no pip, no network).
The notebook itself asserts that one data-parallel train step (gathered negatives,
synced BatchNorm, 8 devices) equals the single-device step to 1e-5, then runs the
comparison at smoke size on digits; this test checks what each part left behind.
"""

import json
import os
import sys

import nbformat
import pytest

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
                  "backend": jax.default_backend(), "src": SRC, "workdir": WORKDIR,
                  "data_parallel_ok": DATA_PARALLEL_OK, "files": sorted(os.listdir(WORKDIR)),
                  "headline": headline}))"""


def _text(cell) -> str:
  return "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")


def test_tpu_notebook_runs_on_eight_cpu_devices(tmp_path):
  import nbclient  # pylint: disable=g-import-not-at-top
  nb = nbformat.read(NOTEBOOK, as_version=4)
  sources = [c.source for c in nb.cells]
  nb.cells.append(nbformat.v4.new_code_cell(_PROBE))
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu", JNORM_REPO=ROOT, JNORM_NOTEBOOK_RUNTIME="cpu",
             MPLBACKEND="Agg")
  client = nbclient.NotebookClient(
      nb, timeout=300, kernel_name="python3",
      resources={"metadata": {"path": str(tmp_path)}})
  client.execute(env=env)

  probe = json.loads(_text(nb.cells[-1]))
  assert os.path.realpath(probe["executable"]) == os.path.realpath(sys.executable)
  assert probe["backend"] == "cpu" and probe["devices"] == 8
  # The install cell ran its local-checkout branch and skipped pip.
  install = next(c for c, s in zip(nb.cells, sources) if "pip install" in s)
  assert f"jnorm is already installed from {ROOT}" in _text(install)
  assert os.path.realpath(probe["src"]) == os.path.realpath(ROOT)
  # The data-parallel check ran (its asserts passed) and printed both losses.
  check = next(c for c, s in zip(nb.cells, sources) if "DATA_PARALLEL_OK = True" in s)
  assert probe["data_parallel_ok"] and "losses: 1 device" in _text(check)
  assert "8 devices" in _text(check)
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
