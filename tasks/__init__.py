"""The ask-batch pipeline, in layers that import only downward (``docs/architecture.md``, checked by import-linter).

- ``tasks.stages``: one module per stage (cluster, volume, config, job, wait, outputs, teardown); never each other;
- ``tasks.cloud``: adapters and per-run context (SDK clients, retry policy, cluster access, NAS, inputs, run lock);
- ``tasks.render``: pure builders (manifests, diagnosis, cost);
- ``tasks.spec``, ``tasks.naming``, ``tasks.handles``, ``tasks.errors``: parameters, names, handles, errors.
"""
