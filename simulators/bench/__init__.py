"""The test bench: scenarios, the processes a run starts, accounting, chaos, scale-out and soak.

``simulators.bench.runner.run_scenario`` is the one entry point; ``edge bench run`` calls it.
See docs/bench.md.
"""
