"""The experiment app: Hydra entry point, tasks, trainer, results, benchmarks."""
