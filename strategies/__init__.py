"""What to try: YAML -> validated, frozen Strategy objects (torch-free)."""
