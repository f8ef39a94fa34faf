"""Tools shared by the scripts in tools/ (FLOPs, benchmarks)."""
