"""Unit tests: one module's contract in this process (real files, no training run, no CLI)."""
