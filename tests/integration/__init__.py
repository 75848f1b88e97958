"""Integration tests: training runs, the real CLI, tools and launchers, DataLoader workers."""
