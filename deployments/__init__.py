"""Deployment helpers referenced by ``prefect.yaml``: build steps, target wiring, parameter files, the local stack.

Nothing in here runs inside a flow run: these modules run when ``prefect deploy`` builds the deployments
(``deployments.steps``), when an operator wires a target (``deployments.wire``) or starts the local stack
(``deployments.local``), and when someone turns a parameter file into ``prefect deployment run --params`` JSON
(``deployments.params``). See docs/deployments.md.
"""
