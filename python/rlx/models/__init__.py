"""Model builders: graphs for well-known architectures, with their weights bound zero-copy."""
