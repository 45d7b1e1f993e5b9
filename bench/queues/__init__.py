"""Each system's adapter to the benchmark (q_*.py), run as scripts from this folder."""
