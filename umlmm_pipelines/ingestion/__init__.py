"""The shared ingestion mechanism: every source runs through the same page loop and recorder."""
