"""jnorm as a library: `python -m build` makes a wheel that holds the package and its C++
source (nothing else of the repository), installs into a fresh virtual environment and
runs the main command there, from a folder holding a copy of the repository's configs/
(configs/ is a top-level folder of the repository, not part of the package).

Offline by design. The build runs without isolation (`--no-isolation`: the `test` extra
installs the build backend) on a copy of what it reads, since setuptools writes build/
and jnorm.egg-info next to pyproject.toml and the checkout must stay untouched. The fresh
venv (`--without-pip`) gets jnorm from the wheel only (`pip --python VENV install
--no-deps --no-index`); its dependencies come from this venv through one `.pth` line
naming a folder of links to this venv's site-packages minus every jnorm (the editable
install's `__editable__` finder and .pth, its dist-info; a regular install's folder), so
the only jnorm importable there is the wheel's (checked through `jnorm.__file__`). The
install with the dependencies resolved from PyPI (`pip install dist/jnorm-*.whl -c
requirements-lock.txt` in a bare venv) needs the network and is a manual check.

Slow (a build, a venv and the `:smoke` main command): the full suite only.
`build_wheel` and `fresh_venv` are shared with tests/test_tpu_notebook.py.
"""

import fnmatch
import json
import os
import pathlib
import shutil
import site
import subprocess
import sys
import zipfile

import pytest

pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parent.parent
# What the build reads (pyproject.toml; README.md, the long description; the package),
# and folders that must stay out of the wheel, copied so that their absence is checked.
_COPIED = ("pyproject.toml", "README.md", "jnorm", "configs", "tests", "docs")
_NOT_COPIED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")
# Entries of a site-packages folder that are some jnorm: hidden from the fresh venv.
_JNORM_ENTRIES = ("jnorm", "jnorm-*", "jnorm.egg-link", "__editable__*jnorm*", "*.pth")


def clean_env(**extra: str) -> dict:
  """This process's environment without what would point a subprocess at another Python
  or at pip's configuration and indexes (pip then stays offline), plus `extra`."""
  dropped = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "JNORM_WHEEL",
             "JNORM_REPO", "JNORM_CONFIGS")
  env = {k: v for k, v in os.environ.items()
         if k not in dropped and not k.startswith("PIP_")}
  env.update(PYTHONNOUSERSITE="1", PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1",
             PIP_DISABLE_PIP_VERSION_CHECK="1")
  env.update(extra)
  return env


def _run(command, **kwargs) -> subprocess.CompletedProcess:
  kwargs.setdefault("env", clean_env())
  kwargs.setdefault("timeout", 300)
  return subprocess.run([str(c) for c in command], capture_output=True, text=True,
                        check=False, **kwargs)


def _output(result: subprocess.CompletedProcess) -> str:
  return f"rc {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


def build_wheel(out_dir: pathlib.Path) -> pathlib.Path:
  """`python -m build --wheel --no-isolation` on a copy of the repository's sources in
  `out_dir`/source; returns the wheel (in `out_dir`/dist)."""
  source = out_dir / "source"
  source.mkdir(parents=True)
  names = list(_COPIED) + [p.name for p in ROOT.glob("LICENSE*")]
  names += ["MANIFEST.in"] if (ROOT / "MANIFEST.in").exists() else []
  for name in names:
    if (ROOT / name).is_dir():
      shutil.copytree(ROOT / name, source / name, ignore=_NOT_COPIED)
    else:
      shutil.copy2(ROOT / name, source / name)
  dist = out_dir / "dist"
  result = _run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir",
                 dist, source])
  assert result.returncode == 0, _output(result)
  wheels = sorted(dist.glob("jnorm-*.whl"))
  assert len(wheels) == 1, wheels
  return wheels[0]


def _site_dirs() -> list:
  dirs = list(site.getsitepackages())
  if site.ENABLE_USER_SITE:
    dirs.append(site.getusersitepackages())
  return [d for d in dict.fromkeys(dirs) if os.path.isdir(d)]


def fresh_venv(path: pathlib.Path) -> tuple:
  """A venv at `path` without pip or jnorm that imports this venv's other packages.

  Returns its python and its site-packages folder.
  """
  result = _run([sys.executable, "-m", "venv", "--without-pip", path])
  assert result.returncode == 0, _output(result)
  python = path / "bin" / "python"
  result = _run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
  assert result.returncode == 0, _output(result)
  site_packages = pathlib.Path(result.stdout.strip())
  lines = []
  for i, site_dir in enumerate(_site_dirs()):
    links = path / "deps" / str(i)
    links.mkdir(parents=True)
    for entry in os.scandir(site_dir):
      if not any(fnmatch.fnmatch(entry.name, pattern) for pattern in _JNORM_ENTRIES):
        (links / entry.name).symlink_to(entry.path)
    lines.append(str(links))
  # Appended to sys.path after the venv's own site-packages, so the wheel's jnorm comes
  # first anyway; .pth files inside these folders are not run (only site dirs' are).
  (site_packages / "_jnorm_test_deps.pth").write_text("\n".join(lines) + "\n")
  return python, site_packages


def install_wheel(python: pathlib.Path, wheel: pathlib.Path) -> None:
  """Installs `wheel` alone (no dependencies, no index) into `python`'s environment."""
  result = _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps",
                 "--no-index", wheel])
  assert result.returncode == 0, _output(result)


def _compiler() -> str | None:
  """The C++ compiler jnorm.cpu.kernels would use (its rule)."""
  return os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")


def _package_files(suffix: str) -> set:
  """The package's files ending in `suffix`, as paths relative to the repository."""
  return {p.relative_to(ROOT).as_posix() for p in (ROOT / "jnorm").rglob("*" + suffix)
          if "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> pathlib.Path:
  return build_wheel(tmp_path_factory.mktemp("wheel"))


def test_wheel_holds_the_package_and_its_cc_source_only(wheel):
  with zipfile.ZipFile(wheel) as archive:
    names = set(archive.namelist())
    dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
    top_level = archive.read(f"{dist_info}/top_level.txt").decode().split()
  assert wheel.name.startswith("jnorm-0.1.0-") and wheel.name.endswith("-py3-none-any.whl")
  assert top_level == ["jnorm"]
  package = {n for n in names if n.startswith("jnorm/")}
  modules, sources = _package_files(".py"), _package_files(".cc")
  assert "jnorm/main.py" in modules and "jnorm/__init__.py" in modules
  assert {n for n in package if n.endswith(".py")} == modules
  # The CPU kernels' C++ source, wherever the package keeps it (package-data).
  assert sources, "no .cc file in jnorm/"
  assert {n for n in package if n.endswith(".cc")} == sources
  assert package == modules | sources
  # Nothing of the repository around the package: no tests/, docs/, configs/.
  assert not {n for n in names - package if not n.startswith(dist_info + "/")}
  assert not any(n.startswith(("tests/", "docs/", "configs/")) for n in names)


def test_wheel_installs_into_a_fresh_venv_and_runs_the_main_command(wheel, tmp_path):
  python, site_packages = fresh_venv(tmp_path / "venv")
  install_wheel(python, wheel)
  run_dir = tmp_path / "run"  # outside the repository: no ./jnorm to import from
  shutil.copytree(ROOT / "configs", run_dir / "configs", ignore=_NOT_COPIED)
  probe = _run([python, "-c", (
      "import json, pathlib, jnorm\n"
      "package = pathlib.Path(jnorm.__file__).parent\n"
      "print(json.dumps({'file': jnorm.__file__, 'cc': sorted(\n"
      "    p.relative_to(package.parent).as_posix() for p in package.rglob('*.cc'))}))")],
               cwd=run_dir)
  assert probe.returncode == 0, _output(probe)
  found = json.loads(probe.stdout)
  print("jnorm in the fresh venv:", found["file"])
  assert pathlib.Path(found["file"]).resolve().is_relative_to(site_packages.resolve()), found
  assert set(found["cc"]) == _package_files(".cc"), found

  result = _run([python, "-m", "jnorm.main", "--config", "configs/default.py:smoke",
                 "--workdir", "W"], cwd=run_dir, timeout=600)
  assert result.returncode == 0, _output(result)
  results = json.loads((run_dir / "W" / "results.json").read_text())
  assert 0.0 <= results["knn_accuracy"] <= 1.0
  if _compiler():  # the installed kernels.cc was found, built (or its build loaded) and used
    assert results["cpu_tuning"]["conv"] == "kernels", _output(result)
