"""What the measurements mean: attribution, findings, studies, decisions (recommend, diff) and estimates.

Reads results (loadprof.results.model) and specs; never measures, never renders, never reaches into a worker.
"""
