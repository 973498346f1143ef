"""Runs notebooks 01-03 top to bottom at their SMALL settings (each asserts the claims it shows)
and checks that every notebook is stored stripped, in its JSON layout, without library code.

The kernel is 'python3'; jupyter_client launches a kernelspec whose argv starts with
`python` with `sys.executable`, so the kernel is this venv's Python (the test checks it).
Notebook 04 needs a Colab TPU and is only checked for structure.
"""

import json
import os
import re
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

NOTEBOOK_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "notebooks")
EXECUTED = ["01_theory.ipynb", "02_simulations.ipynb", "03_norms_as_confidence.ipynb"]
ALL = EXECUTED + ["04_colab_tpu.ipynb"]


def _read(name):
  return nbformat.read(os.path.join(NOTEBOOK_DIR, name), as_version=4)


@pytest.mark.parametrize("name", ALL)
def test_notebook_is_stored_stripped_with_a_settings_cell(name):
  nb = _read(name)
  nbformat.validate(nb)
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert code, name
  assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), (
      f"{name} is stored with outputs; strip them")
  assert "SMALL = True" in code[0].source, f"{name}: the first code cell must set SMALL = True"
  assert any("from jnorm" in c.source or "import jnorm" in c.source for c in code), name


@pytest.mark.parametrize("name", ALL)
def test_notebook_json_layout_is_kept(name):
  """Stored as json.dumps(indent=1, ensure_ascii=False) plus a newline (clean diffs)."""
  with open(os.path.join(NOTEBOOK_DIR, name), encoding="utf-8") as f:
    text = f.read()
  assert text == json.dumps(json.loads(text), indent=1, ensure_ascii=False) + "\n", name


@pytest.mark.parametrize("name", EXECUTED)
def test_notebook_defines_no_functions(name):
  """Notebooks only call jnorm: numerical code (functions included) lives in the library."""
  for i, cell in enumerate(_read(name).cells):
    if cell.cell_type == "code":
      for line in cell.source.splitlines():
        assert not re.search(r"^\s*(def|class)\s|\blambda\b", line), (
            f"{name} cell {i} defines a function; move it into jnorm: {line!r}")


@pytest.mark.slow
@pytest.mark.parametrize("name", EXECUTED)
def test_notebook_runs_at_small_settings(name, tmp_path):
  import nbclient  # pylint: disable=g-import-not-at-top
  nb = _read(name)
  probe = nbformat.v4.new_code_cell("import sys; print(sys.executable)")
  nb.cells.append(probe)
  client = nbclient.NotebookClient(
      nb, timeout=300, kernel_name="python3",
      resources={"metadata": {"path": str(tmp_path)}})
  client.execute()
  printed = "".join(o.get("text", "") for o in nb.cells[-1].outputs).strip()
  assert os.path.realpath(printed) == os.path.realpath(sys.executable)
