"""Ways to start a teamster cluster."""

from teamster.cluster.local import LocalCluster

__all__ = ["LocalCluster"]
