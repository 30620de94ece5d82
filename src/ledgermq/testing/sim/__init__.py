"""Deterministic, single-threaded simulation of Raft groups (DESIGN principle 5)."""

from .cluster import Cluster
from .simulation import Network, SimResult, Simulation, SimulationFailure

__all__ = ["Cluster", "Network", "SimResult", "Simulation", "SimulationFailure"]
