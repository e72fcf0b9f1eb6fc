"""How to show it: renderers over the one result model (loadprof.results.model)."""
