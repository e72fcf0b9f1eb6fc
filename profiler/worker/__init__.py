"""The trial's own process: the worker and the forkserver zygote it can be forked from."""
