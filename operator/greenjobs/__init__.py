"""greenjobs: carbon-aware scheduling and GPU power capping for training Jobs on Kubernetes."""

__version__ = "0.1.0"
