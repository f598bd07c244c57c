"""Cloud adapters and the per-run context: SDK clients, the retry policy, cluster access, NAS, inputs, run lock."""
