"""Training: config schema and validation (`config`), building a run (`build`), the
sharded train step (`step`), the loop with evaluation (`loop`), orbax checkpoints
(`checkpoint`) and the metrics writer and reader (`metrics`)."""
