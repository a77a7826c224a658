"""Command-line interface: ``mmldm <command> ...``."""
