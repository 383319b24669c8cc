"""Built-in trainers (placeholder; implemented by the trainers issue)."""
