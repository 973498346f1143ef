"""README.md is a front door that matches the code: its two commands come first and the
test command is the one CI runs; its library example runs as written; its size stays a
front door's (benchmarks/README.md and docs/findings.md too)."""

import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(*path: str) -> str:
  with open(os.path.join(REPO, *path), encoding="utf-8") as f:
    return f.read()


def test_the_two_commands_come_first_and_ci_runs_the_test_command():
  readme = _read("README.md")
  lines = readme.splitlines()
  commands = re.findall(r"```bash\n(.*?)\n```", readme, re.S)
  assert len(commands) == 2, commands
  main_command, test_command = commands
  assert "python -m jnorm.main --config configs/default.py" in main_command
  first_lines = "\n".join(lines[:45])
  assert main_command in first_lines and test_command in first_lines
  install_and_test = test_command.split("&& ", 2)[-1]  # after the venv's creation
  assert install_and_test in _read(".ci", "run"), install_and_test


@pytest.mark.slow
def test_the_library_example_runs():
  code = re.search(r"```python\n(.*?)```", _read("README.md"), re.S).group(1)
  namespace = {}
  exec(compile(code, "README.md", "exec"), namespace)  # pylint: disable=exec-used
  assert namespace["out"]["backbone"].shape[0] == namespace["batch"]["input"].shape[0]


def test_the_docs_stay_within_their_length_and_carry_no_dates():
  for path, most in ((("README.md",), 180), (("benchmarks", "README.md"), 300),
                     (("docs", "findings.md"), 500)):
    text = _read(*path)
    assert len(text.splitlines()) <= most, (path, len(text.splitlines()))
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b", text), path


def _table_rows(markdown: str) -> list:
  return [line for line in markdown.splitlines() if line.startswith("|")]


def test_the_findings_tables_are_the_ones_the_raw_results_give():
  """The Holm family table is docs/claims_family.py's output, and the OOD table the
  confidence comparison's ood.md, verbatim: each recomputes from docs/findings_data."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location(
      "claims_family", os.path.join(REPO, "docs", "claims_family.py"))
  family = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(family)
  findings = _read("docs", "findings.md")
  for row in _table_rows(family.markdown(family.family())):
    assert row in findings, row
  for row in _table_rows(_read("docs", "findings_data", "fmnist_confidence", "ood.md")):
    assert row in findings, row
