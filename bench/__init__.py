"""lockgate benchmarks: the overhead bench (overhead.py) and its stand-in upstream."""
