"""The per-company full reconciliation job and its checks."""
