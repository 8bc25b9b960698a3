"""The paper's benchmarks as commands (``crystalforge benchmark``): campaigns in the results
store, scored by :mod:`evaluation.discovery`."""
