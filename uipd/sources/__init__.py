"""The source runtime: plugin discovery, the publisher handed to sources, and their supervision."""
