"""The package's layout rules, checked on the source (ast), not by importing it.

Layers (an import goes to a strictly lower layer, or stays in its own folder):
  0 library   the top-level modules (errors, json_files, stats, tables, norms, losses,
              gradscale, optim, augment, probes, ...)
  1 models, data, simulations, plots, methods (methods may also import models)
  2 cpu       the CPU tuning: swaps layers into models; nothing below imports it
  3 training
  4 jobs
  5 main
Also: no import cycle between jnorm modules; no `import jnorm...` inside a function;
no module over 350 lines and no function over 80; no reference to notes that are not
part of the repository.
"""

import ast
import os
import shutil
import subprocess


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "jnorm")

LAYERS = {"models": 1, "data": 1, "simulations": 1, "plots": 1, "methods": 1,
          "cpu": 2, "training": 3, "jobs": 4, "main": 5}
ALLOWED_PEERS = {"methods": {"models"}}  # same-layer folders a folder may import
MAX_MODULE_LINES = 350
MAX_FUNCTION_LINES = 80


def _module_name(path: str) -> str:
  rel = os.path.relpath(path, REPO)[:-len(".py")].split(os.sep)
  if rel[-1] == "__init__":
    rel = rel[:-1]
  return ".".join(rel)


def _sources() -> dict:
  """{module name: (path, source text)} of every module under jnorm/."""
  out = {}
  for root, dirs, files in os.walk(PACKAGE):
    dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__pycache__")))
    for name in sorted(files):
      if name.endswith(".py"):
        path = os.path.join(root, name)
        with open(path, encoding="utf-8") as f:
          out[_module_name(path)] = (path, f.read())
  return out


SOURCES = _sources()
TREES = {name: ast.parse(text, filename=path) for name, (path, text) in SOURCES.items()}


def _is_package(module: str) -> bool:
  return os.path.exists(os.path.join(REPO, *module.split("."), "__init__.py"))


def _absolute(module: str, node: ast.ImportFrom) -> str:
  """The absolute module an ImportFrom names (resolving relative imports)."""
  if not node.level:
    return node.module or ""
  parts = module.split(".") if _is_package(module) else module.split(".")[:-1]
  base = parts[:len(parts) - node.level + 1]
  return ".".join(base + ([node.module] if node.module else []))


def _targets(module: str, node) -> list:
  """The jnorm modules an import statement depends on (a name imported from a package
  counts as its submodule when one exists, else as the package)."""
  if isinstance(node, ast.Import):
    names = [alias.name for alias in node.names]
  else:
    base = _absolute(module, node)
    names = []
    for alias in node.names:
      sub = f"{base}.{alias.name}"
      names.append(sub if sub in SOURCES else base)
  return [n for n in names if n == "jnorm" or n.startswith("jnorm.")]


def _imports(module: str) -> list:
  """[(target module, line, inside a function)] of every jnorm import in `module`."""
  found = []

  def visit(node, in_function):
    for child in ast.iter_child_nodes(node):
      if isinstance(child, (ast.Import, ast.ImportFrom)):
        found.extend((t, child.lineno, in_function) for t in _targets(module, child))
      visit(child, in_function or isinstance(
          child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

  visit(TREES[module], False)
  return found


def _folder(module: str) -> str:
  """'library' for the top-level modules (and jnorm itself), else the folder / 'main'."""
  parts = module.split(".")
  if len(parts) == 1:
    return "library"
  if len(parts) == 2 and not _is_package(module) and parts[1] != "main":
    return "library"
  return parts[1]


def _layer(module: str) -> int:
  folder = _folder(module)
  return 0 if folder == "library" else LAYERS[folder]


def test_the_package_was_found():
  assert {"jnorm.stats", "jnorm.tables", "jnorm.methods", "jnorm.training.loop",
          "jnorm.jobs.compare", "jnorm.main"} <= set(SOURCES)
  assert {_folder(m) for m in SOURCES} <= {"library", *LAYERS}, "a folder without a layer"
  assert [_layer(m) for m in ("jnorm", "jnorm.stats", "jnorm.methods", "jnorm.models.heads",
                              "jnorm.cpu.conv", "jnorm.training.loop", "jnorm.jobs",
                              "jnorm.main")] == [0, 0, 1, 1, 2, 3, 4, 5]
  # `from jnorm.methods import base` depends on the submodule, `from jnorm.tables import
  # compare_arms` on the module, `from jnorm import data` on the package.
  tree = ast.parse("from jnorm.methods import base\nfrom jnorm.tables import compare_arms\n"
                   "from jnorm import data, stats\nimport jnorm.json_files\nimport numpy\n")
  targets = [t for node in tree.body for t in _targets("jnorm.jobs.compare", node)]
  assert targets == ["jnorm.methods.base", "jnorm.tables", "jnorm.data", "jnorm.stats",
                     "jnorm.json_files"]


def test_every_import_goes_to_a_lower_layer_or_the_same_folder():
  bad = []
  for module in SOURCES:
    folder, layer = _folder(module), _layer(module)
    for target, line, _ in _imports(module):
      t_folder, t_layer = _folder(target), _layer(target)
      if t_folder == folder or t_layer < layer or t_folder in ALLOWED_PEERS.get(folder, ()):
        continue
      bad.append(f"{SOURCES[module][0]}:{line}: {module} (layer {layer}) imports {target} "
                 f"(layer {t_layer})")
  assert not bad, "upward or sideways imports:\n" + "\n".join(bad)


def _cycles(graph: dict) -> list:
  """Strongly connected components with more than one module (or a self-import)."""
  index, low, stack, on_stack, out = {}, {}, [], set(), []

  def connect(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in graph.get(v, ()):
      if w not in index:
        connect(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1 or v in graph.get(v, ()):
        out.append(sorted(component))

  for v in sorted(graph):
    if v not in index:
      connect(v)
  return out


def test_cycle_finder_finds_cycles():
  assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
  assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_jnorm_modules():
  graph = {m: {t for t, _, _ in _imports(m) if t in SOURCES} for m in SOURCES}
  cycles = _cycles(graph)
  assert not cycles, f"import cycles: {cycles}"


def test_no_jnorm_import_inside_a_function():
  bad = [f"{SOURCES[m][0]}:{line}: imports {target} inside a function"
         for m in SOURCES for target, line, in_function in _imports(m) if in_function]
  assert not bad, "\n".join(bad)


def test_modules_are_at_most_350_lines():
  long = {path: text.count("\n") + (not text.endswith("\n"))
          for path, text in SOURCES.values()}
  bad = [f"{path}: {n} lines" for path, n in long.items() if n > MAX_MODULE_LINES]
  assert not bad, "\n".join(bad)


def test_functions_are_at_most_80_lines():
  bad = []
  for module, tree in TREES.items():
    for node in ast.walk(tree):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        lines = node.end_lineno - node.lineno + 1
        if lines > MAX_FUNCTION_LINES:
          bad.append(f"{SOURCES[module][0]}:{node.lineno}: {node.name} has {lines} lines")
  assert not bad, "\n".join(bad)


# Built from pieces so that this file does not match its own search.
_STALE_REFERENCES = ("PAPER" + ".md", "NOTES" + ".md", "helper" + " B")


def test_no_reference_to_notes_outside_the_repository():
  assert shutil.which("git") and os.path.isdir(os.path.join(REPO, ".git")), (
      "this check reads the repository with git grep: run the tests from a git checkout")
  args = ["git", "grep", "-n"]
  for pattern in _STALE_REFERENCES:
    args += ["-e", pattern]
  proc = subprocess.run(args + ["--", "jnorm", "configs", "tests"], cwd=REPO,
                        capture_output=True, text=True, check=False)
  assert proc.returncode == 1 and not proc.stdout, (
      f"git grep exit code {proc.returncode}:\n{proc.stdout}{proc.stderr}")
