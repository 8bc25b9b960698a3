"""The score network of paper A.8 and its building blocks."""

from model.network.gemnet import ScoreNetwork, ScoreOutput
from model.network.graph import PeriodicGraph, periodic_radius_graph, triplets
from model.network.statistics import DataStatistics

__all__ = [
    "DataStatistics",
    "PeriodicGraph",
    "ScoreNetwork",
    "ScoreOutput",
    "periodic_radius_graph",
    "triplets",
]
