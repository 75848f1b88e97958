"""Cluster tests: a real local SLURM cluster (``scripts/slurm_local.sh``)."""
