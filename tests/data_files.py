"""Whether the real data files some tests read are here (tests/conftest.py's
`fashion_mnist` marker, and tests that pick their own fallback)."""

import os

# .ci/run sets it: a test that needs missing data fails instead of skipping.
REQUIRE_DATA = os.environ.get("JNORM_REQUIRE_DATA") == "1"


def missing_data_reason() -> str | None:
  """None when Fashion-MNIST's idx files are present, else why and how to install them."""
  from jnorm.data import fashion_mnist as fm  # pylint: disable=import-outside-toplevel
  if fm.files_present():
    return None
  return (f"Fashion-MNIST's idx files are not in {fm.default_dir()}: install Debian's "
          f"package with `{fm.INSTALL}` (as root), or set {fm.DIR_ENV} to a folder "
          "holding them")
