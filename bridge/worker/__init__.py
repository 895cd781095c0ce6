"""Running tasks: the registry of task functions, the per-run context and the worker loop."""
