"""Model preparation (the embedded GGUF, hub or local models) and loading."""
