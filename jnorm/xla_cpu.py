"""XLA:CPU settings that jnorm applies when it is imported (before any JAX computation).

On this project's CPU path (small ResNets, 2 cores), XLA:CPU's default routes
convolutions through YNNPACK fusions. Measured on the experiments' SmallResNet SimCLR
step (batch 128, 16 px; benchmarks/README.md), Eigen's convolutions are faster, while
YNNPACK stays the faster choice for reductions (BatchNorm statistics). So jnorm sets

  --xla_cpu_experimental_ynn_fusion_type=reduce

i.e. YNNPACK for reductions only. The flag changes which kernels run, not the function
computed (float32 rounding differs in the last bits). It is appended to `XLA_FLAGS`,
never replacing a user's flags: it is skipped when `XLA_FLAGS` already names
`xla_cpu_experimental_ynn_fusion_type`, when `JNORM_XLA_CPU_DEFAULTS=0`, and for jaxlib
versions it was not measured on (an unknown flag aborts XLA). XLA reads `XLA_FLAGS`
when it creates the CPU client, at the first computation, so importing jnorm after
`import jax` still works; importing it after a computation has run has no effect.
"""

import os

YNN_FLAG_NAME = "xla_cpu_experimental_ynn_fusion_type"

YNN_FLAG = f"--{YNN_FLAG_NAME}=reduce"
OPT_OUT = "JNORM_XLA_CPU_DEFAULTS"
# jaxlib versions on which the flag exists and was measured (XLA aborts on unknown flags).
MEASURED_JAXLIB = ("0.10.",)


def cpu_flags(xla_flags: str, *, jaxlib_version: str, opt_out: str | None) -> str:
  """`xla_flags` with jnorm's CPU defaults appended where they apply (pure)."""
  if opt_out == "0" or YNN_FLAG_NAME in xla_flags:
    return xla_flags
  if not jaxlib_version.startswith(MEASURED_JAXLIB):
    return xla_flags
  return f"{xla_flags} {YNN_FLAG}".strip()


def eigen_convolutions(xla_flags: str) -> bool:
  """True when `xla_flags` keep XLA:CPU's convolutions out of YNNPACK (on Eigen).

  That is the case under jnorm's default flag (`=reduce`) or any user setting of the
  YNNPACK fusion types that names no convolution; without the flag XLA:CPU (jaxlib
  0.10) sends convolutions to YNNPACK. `jnorm.models.conv.use_gemm('auto')` reads it:
  on Eigen the native convolution beats the GEMM form even on ResNet-18
  (benchmarks/README.md), on YNNPACK it does not.
  """
  value = None
  for flag in xla_flags.split():
    if flag.lstrip("-").startswith(YNN_FLAG_NAME + "="):
      value = flag.split("=", 1)[1]  # the last setting wins, as in XLA's parser
  return value is not None and "convolution" not in value


def apply_cpu_defaults() -> str:
  """Appends jnorm's CPU defaults to `os.environ['XLA_FLAGS']`; returns the flags."""
  try:
    from jaxlib import version  # pylint: disable=import-outside-toplevel
    jaxlib_version = version.__version__
  except ImportError:
    jaxlib_version = ""
  flags = cpu_flags(os.environ.get("XLA_FLAGS", ""), jaxlib_version=jaxlib_version,
                    opt_out=os.environ.get(OPT_OUT))
  if flags:
    os.environ["XLA_FLAGS"] = flags
  return flags
