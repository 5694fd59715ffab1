"""Links between the sources' catalogs: workflows → model files → CivitAI versions, Ollama digests."""
