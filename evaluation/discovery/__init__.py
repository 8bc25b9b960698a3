"""The paper's discovery benchmarks, scored: Table D3's systems, the combined hull of every
method, and the aggregates and figures of Fig. 3 and Fig. 5g–h."""
