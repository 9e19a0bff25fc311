"""The test bench: scenarios, the processes a run starts, accounting, chaos, scale-out and soak.

``simulators.testbench.runner.run_scenario`` is the one entry point; ``edge testbench run`` calls it.
See docs/testbench.md.
"""
