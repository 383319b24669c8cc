"""Test-environment preparation run by `make test` before pytest (placeholder)."""

if __name__ == "__main__":
    pass
