"""What to measure: small plug-ins that hook one thing each and return a ProbeResult."""
