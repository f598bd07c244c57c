"""A local Alibaba Cloud OSS server that the unmodified `alibabacloud_oss_v2` SDK works against.

Why: the pipeline's OSS code (and the SDK's uploader/downloader/paginator) must run in tests exactly as
in production, configured only with an endpoint and access keys. So this speaks the real wire protocol:
V4 and V1 signatures (header and presigned query), OSS XML bodies and errors, `x-oss-request-id` and
`Date` on every response, CRC-64/ECMA, Range with `x-oss-range-behavior`, and multipart uploads.

Emulated: buckets (Put/Delete/List, GetBucketInfo/Acl/Location/Stat), objects (Put/Get/Head/
GetObjectMeta/Delete/DeleteMultiple/Copy, ListObjects v1 and v2 with prefix/delimiter/markers/
continuation tokens/url encoding), multipart (Initiate/UploadPart/Complete incl. `x-oss-complete-all`/
Abort/ListParts/ListMultipartUploads), path-style and virtual-hosted addressing, fault injection
(`sandbox.faults`), persistence across restarts (see `storage`), STS temporary keys (`sandbox.sts`: the
request must carry the key's security token, and the key stops working when it expires).

NOT emulated (requests using them answer 501 NotImplemented, or the header is ignored):
ACLs and RAM/bucket policies (every configured key may do everything, ACL reads say `private`),
versioning, lifecycle, CORS, referer, logging, website, tagging, encryption
(SSE/KMS), WORM/retention, replication, storage-class transitions and Archive restore, append/symlink
objects, UploadPartCopy, PostObject (HTML form upload), callbacks, image processing (`x-oss-process`),
traffic limits, request payer, real quotas and the 5 GB/48.8 TB size limits beyond a simple
per-request size check.
"""

from .app import make_app

__all__ = ["make_app"]
