"""Energy: counters, indicators, baselines and anomalies, their jobs and CLI."""
