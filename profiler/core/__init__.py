"""Core: types, figures and the result's parts every layer may use; imports nothing of loadprof above it."""
