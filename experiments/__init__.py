"""Paper experiments: one runnable module per artifact (`python -m experiments.<name>`)."""
