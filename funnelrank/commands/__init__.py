"""The drivers behind ``funnelrank`` sub-commands (the top layer: nothing imports them but the
CLI and the benchmark scripts)."""
