"""Engine adapters (one per kind) and the directory of configured engines."""
