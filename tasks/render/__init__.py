"""Pure rendering: Kubernetes manifests and cloud requests, pod diagnosis, cost estimates. No I/O."""
