"""jnorm: embedding norms in self-supervised learning, in JAX.

A functional reimplementation of Draganov et al., "On the Importance of Embedding
Norms in Self-Supervised Learning" (ICML 2025). Submodules are imported lazily so
that `import jnorm` stays cheap; import what you need, e.g. `from jnorm import losses`.
Importing jnorm changes nothing in the process: the CPU tuning is `jnorm.cpu.enable()`.
"""

__version__ = "0.1.0"
