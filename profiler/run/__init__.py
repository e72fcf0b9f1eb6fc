"""Orchestration on the parent side: session, executors, the runner of one isolated trial, lifetime of a sweep."""
