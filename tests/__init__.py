"""The test suite; its helper modules (run_data, tune_weights_data, fault_runs, planner_process) are also
imported by benchmarks as ``tests.<module>``."""
