"""Stage launch_job: create the Job, or adopt the one an earlier attempt of this run created.

The Job's name is the run key plus a hash of its rendered spec (``tasks.manifests.job_manifest``). So:

- a retried task or a re-run of the same flow run renders the same name, gets 409 AlreadyExists, reads the Job
  and re-attaches to it — running or finished — instead of starting the work twice (pods are billed);
- a Job with that name but a different ``ask-batch.io/spec-hash`` annotation is refused: something else made it.

We create with the sync kubernetes client instead of prefect-kubernetes' ``create_namespaced_job`` task: that task
is async and raises on 409, and adoption is the whole point here (research/prefect.md §1).
"""

import logging
from typing import Any

from tasks.handles import JobHandle
from tasks.retry import CloudError, call

log = logging.getLogger("ask_batch.job")


class JobConflict(RuntimeError):
    """A Job with our name exists but was not rendered from the same spec."""


def launch_job(batch_v1: Any, body: dict[str, Any]) -> JobHandle:
    """Create ``body`` (from ``job_manifest``) or adopt the existing Job of the same name and spec hash.

    Args:
        batch_v1: a ``kubernetes.client.BatchV1Api``.
        body: the rendered Job.

    Returns:
        The handle; ``adopted`` says whether it already existed.
    """
    meta = body["metadata"]
    ns, name = meta["namespace"], meta["name"]
    try:
        created = call(batch_v1.create_namespaced_job, ns, body, service="Kubernetes", operation=f"create Job {name}")
        log.info("job %s/%s created", ns, name)
        return JobHandle(namespace=ns, name=name, uid=created.metadata.uid, adopted=False,
                         completions=body["spec"]["completions"])
    except CloudError as err:
        if err.status != 409:
            raise
    existing = call(batch_v1.read_namespaced_job, name, ns, service="Kubernetes", operation=f"read Job {name}")
    want = meta["annotations"]["ask-batch.io/spec-hash"]
    have = (existing.metadata.annotations or {}).get("ask-batch.io/spec-hash")
    if have != want:
        raise JobConflict(f"Job {ns}/{name} exists with spec hash {have!r}, not {want!r}; fix: delete it, or use "
                          f"another run_key")
    log.info("job %s/%s already exists: re-attaching (no new pods are started)", ns, name)
    return JobHandle(namespace=ns, name=name, uid=existing.metadata.uid, adopted=True,
                     completions=body["spec"]["completions"])
