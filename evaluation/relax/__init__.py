"""Relaxation. Every caller goes through :func:`evaluation.relax.run.relax`, which runs the
batched torch-sim engine (:mod:`.batched`, its models in :mod:`.torchsim_models`) for MLFFs
with a batched interface (CHGNet, SevenNet) and the per-structure ASE engine (:mod:`.engine`,
which also does single points) for those without (matgl, MatterSim); :mod:`.parallel` spreads
chunks over worker processes and :mod:`.calculators` loads an MLFF by name."""
