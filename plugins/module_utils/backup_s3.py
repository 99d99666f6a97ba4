# -*- coding: utf-8 -*-
# Copyright: victor.ops contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""S3 storage for victor_backup (boto3, imported when present; check_storage refuses S3 without it).

The archive is spooled to a local scratch file while it is produced (bounded memory),
uploaded with boto3's managed transfer (multipart above a threshold), then checked with
HEAD: the object's size, and its ETag against the MD5/multipart-MD5 we computed locally
(skipped for SSE-KMS/SSE-C, whose ETag is not an MD5; then the sha256 we store as object
metadata is compared).  The manifest object is written last; listing reads manifests only.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import hashlib
import json
import math
import os
import uuid

from urllib.parse import urlsplit

from ansible_collections.victor.ops.plugins.module_utils.backup_common import CHUNK, MANIFEST_SUFFIX, BackupError
from ansible_collections.victor.ops.plugins.module_utils.backup_store import LocalStore
from ansible_collections.victor.ops.plugins.module_utils.redact import redact, url_error, url_has_credentials

try:
    import boto3
    from boto3.s3.transfer import TransferConfig
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError
    HAS_BOTO3 = True
    BOTO3_IMPORT_ERROR = None
except ImportError as _exc:  # pragma: no cover - reported by the module
    HAS_BOTO3 = False
    BOTO3_IMPORT_ERROR = _exc
    BotoCoreError = ClientError = Exception


MIB = 1024 * 1024
# Both modules pass it to AnsibleModule; check_storage checks it for the CLI, with AnsibleModule's message
REQUIRED_IF = [("storage", "s3", ["s3_bucket"])]
S3_ATTEMPTS = 3  # tries per request; each waits at most s3_timeout / S3_ATTEMPTS for the endpoint
MAX_S3_TIMEOUT = 3600.0


def storage_argument_spec():
    """Options saying where the backups are (doc fragment victor.ops.backup_storage), shared by both modules."""
    return dict(
        storage=dict(type="str", default="local", choices=["local", "s3"]),
        repository=dict(type="path", default="/var/backups/victor"),
        s3_bucket=dict(type="str"),
        s3_prefix=dict(type="str", default="victor-backups"),
        s3_region=dict(type="str"),
        # no_log: an endpoint URL is where user:password@ gets pasted (it is refused, and must not be echoed)
        s3_endpoint_url=dict(type="str", no_log=True),
        s3_access_key=dict(type="str", no_log=True),
        s3_secret_key=dict(type="str", no_log=True),
        s3_session_token=dict(type="str", no_log=True),
        s3_sse=dict(type="str", choices=["AES256", "aws:kms"]),
        s3_sse_kms_key_id=dict(type="str", no_log=False),
        s3_multipart_threshold=dict(type="int", default=64 * MIB),
        s3_multipart_chunksize=dict(type="int", default=16 * MIB),
        s3_request_checksum_calculation=dict(type="str", choices=["when_supported", "when_required"]),
        s3_response_checksum_validation=dict(type="str", choices=["when_supported", "when_required"]),
        s3_validate_certs=dict(type="bool", default=True),
        s3_timeout=dict(type="float", default=60.0),
    )


def endpoint_problem(url):
    """Why s3_endpoint_url is unusable (credentials in it, not http(s), no host), or None; never quotes a password."""
    if url_has_credentials(url):
        return ("s3_endpoint_url must not hold user:password@ (it would be echoed and logged): "
                "give the credentials as s3_access_key and s3_secret_key")
    try:
        parts = urlsplit(url)
        parts.port  # pylint: disable=pointless-statement
    except ValueError as exc:
        return url_error("s3_endpoint_url", url, exc)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "s3_endpoint_url must be an http:// or https:// URL with a host (got %r)" % url
    return None


def timeout_problem(timeout):
    if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and 0 < timeout <= MAX_S3_TIMEOUT):
        return "s3_timeout must be greater than 0 and at most %d seconds (got %s)" % (MAX_S3_TIMEOUT, timeout)
    return None


def check_storage(params):
    """Raise BackupError for storage options the argument spec cannot refuse (both modules and the CLI call it)."""
    if params["storage"] != "s3":
        return
    for key, value, needed in REQUIRED_IF:
        missing = [name for name in needed if not params[name]]
        if params[key] == value and missing:
            raise BackupError("%s is %s but all of the following are missing: %s" % (key, value, ", ".join(missing)))
    if not HAS_BOTO3:
        raise BackupError("boto3 is required for S3 storage (Debian: apt-get install python3-boto3): %s" % BOTO3_IMPORT_ERROR)
    problem = (params["s3_endpoint_url"] and endpoint_problem(params["s3_endpoint_url"])) or timeout_problem(params["s3_timeout"])
    if problem:
        raise BackupError(problem)
    if params["s3_multipart_chunksize"] < 5 * MIB:
        raise BackupError("s3_multipart_chunksize must be at least 5 MiB (S3's smallest part)")


def make_store(params, spool_dir):
    """A LocalStore or S3Store from the storage options; those left out or null take storage_argument_spec's defaults."""
    given = params
    params = dict((name, option.get("default")) for name, option in storage_argument_spec().items())
    params.update((key, value) for key, value in given.items() if key in params and value is not None)
    check_storage(params)
    if params["storage"] == "local":
        return LocalStore(params["repository"])
    return S3Store(
        params["s3_bucket"], params["s3_prefix"], params["s3_multipart_threshold"], params["s3_multipart_chunksize"],
        spool_dir, params["s3_validate_certs"], params["s3_timeout"], region=params["s3_region"],
        endpoint_url=params["s3_endpoint_url"], access_key=params["s3_access_key"], secret_key=params["s3_secret_key"],
        session_token=params["s3_session_token"], sse=params["s3_sse"], sse_kms_key_id=params["s3_sse_kms_key_id"],
        request_checksum_calculation=params["s3_request_checksum_calculation"],
        response_checksum_validation=params["s3_response_checksum_validation"])


def expected_etag(path, threshold, chunksize):
    """The ETag S3 gives an unencrypted (or SSE-S3) object uploaded by boto3's transfer manager."""
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        if size < threshold:
            digest = hashlib.md5()
            while True:
                block = handle.read(CHUNK)
                if not block:
                    break
                digest.update(block)
            return '"%s"' % digest.hexdigest()
        parts = []
        while True:
            part = hashlib.md5()
            left = chunksize
            while left > 0:
                block = handle.read(min(CHUNK, left))
                if not block:
                    break
                part.update(block)
                left -= len(block)
            if left == chunksize:
                break
            parts.append(part.digest())
    return '"%s-%d"' % (hashlib.md5(b"".join(parts)).hexdigest(), len(parts))


class S3Store:
    """A backup repository under s3://bucket/prefix/."""

    kind = "s3"

    def __init__(self, bucket, prefix, multipart_threshold, multipart_chunksize, spool_dir, validate_certs, timeout,
                 region=None, endpoint_url=None, access_key=None, secret_key=None, session_token=None, sse=None,
                 sse_kms_key_id=None, request_checksum_calculation=None, response_checksum_validation=None):
        self.secrets = [secret_key, session_token]
        self.bucket = bucket
        self.prefix = (prefix or "").strip("/")
        self.sse = sse
        self.sse_kms_key_id = sse_kms_key_id
        self.threshold = int(multipart_threshold)
        self.chunksize = int(multipart_chunksize)
        self.spool_dir = spool_dir
        # An endpoint that never answers fails after S3_ATTEMPTS waits of timeout / S3_ATTEMPTS each
        # (plus botocore's backoff of a few seconds), not after botocore's defaults (60 s, 5 retries).
        wait = max(1.0, float(timeout) / S3_ATTEMPTS)
        config_args = {"retries": {"total_max_attempts": S3_ATTEMPTS, "mode": "standard"},
                       "connect_timeout": wait, "read_timeout": wait}
        if request_checksum_calculation:
            config_args["request_checksum_calculation"] = request_checksum_calculation
        if response_checksum_validation:
            config_args["response_checksum_validation"] = response_checksum_validation
        try:
            config = Config(**config_args)
        except TypeError:
            # botocore older than 1.36 has no checksum settings and sends no CRC by default.
            config_args.pop("request_checksum_calculation", None)
            config_args.pop("response_checksum_validation", None)
            config = Config(**config_args)
        session = boto3.session.Session(aws_access_key_id=access_key, aws_secret_access_key=secret_key,
                                        aws_session_token=session_token, region_name=region)
        self.client = session.client("s3", endpoint_url=endpoint_url, config=config, verify=validate_certs)
        self.transfer = TransferConfig(multipart_threshold=self.threshold, multipart_chunksize=self.chunksize,
                                       max_concurrency=4, use_threads=True)

    def describe(self):
        return "s3://%s/%s" % (self.bucket, self.prefix)

    def error(self, text, exc):
        """A BackupError saying what failed and botocore's reason, with the credentials masked out."""
        return BackupError(redact("%s: %s" % (text, exc), self.secrets))

    def key(self, name):
        return "%s/%s" % (self.prefix, name) if self.prefix else name

    def _extra(self):
        extra = {}
        if self.sse:
            extra["ServerSideEncryption"] = self.sse
        if self.sse_kms_key_id:
            extra["SSEKMSKeyId"] = self.sse_kms_key_id
        return extra

    def ensure(self):
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as exc:
            raise self.error("S3 bucket %s is not reachable" % self.bucket, exc)

    def open_writer(self, name):
        os.makedirs(self.spool_dir, mode=0o700, exist_ok=True)
        tmp = os.path.join(self.spool_dir, ".%s.%s.part" % (name, uuid.uuid4().hex[:8]))
        return tmp, os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")

    def commit_data(self, tmp, handle, name, size, sha256):
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
        try:
            if os.path.getsize(tmp) != size:
                raise BackupError("spooled archive has %d bytes, expected %d" % (os.path.getsize(tmp), size))
            extra = self._extra()
            extra["Metadata"] = {"sha256": sha256}
            key = self.key(name)
            try:
                self.client.upload_file(tmp, self.bucket, key, ExtraArgs=extra, Config=self.transfer)
                head = self.client.head_object(Bucket=self.bucket, Key=key)
            except (BotoCoreError, ClientError) as exc:
                raise self.error("upload of %s to %s failed" % (name, self.describe()), exc)
            if head["ContentLength"] != size:
                raise BackupError("uploaded object %s has %d bytes, expected %d" % (key, head["ContentLength"], size))
            if head.get("Metadata", {}).get("sha256") != sha256:
                raise BackupError("uploaded object %s lost its sha256 metadata" % key)
            etag = head.get("ETag")
            checked = "size"
            if self.sse in (None, "", "AES256"):
                wanted = expected_etag(tmp, self.threshold, self.chunksize)
                if etag != wanted:
                    raise BackupError("uploaded object %s has ETag %s, expected %s: the upload is corrupt" % (key, etag, wanted))
                checked = "size+md5"
            return {"location": "s3://%s/%s" % (self.bucket, key), "etag": etag, "upload_check": checked,
                    "multipart": size >= self.threshold}
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def abort_data(self, tmp, handle):
        try:
            handle.close()
        except Exception:  # pylint: disable=broad-except
            pass
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)

    def put_manifest(self, manifest):
        body = json.dumps(manifest, indent=1, sort_keys=True).encode("utf-8")
        try:
            self.client.put_object(Bucket=self.bucket, Key=self.key(manifest["id"] + MANIFEST_SUFFIX), Body=body,
                                   ContentType="application/json", **self._extra())
        except (BotoCoreError, ClientError) as exc:
            raise self.error("writing the manifest of %s failed" % manifest["id"], exc)

    def _keys(self, with_time=False):
        prefix = self.prefix + "/" if self.prefix else ""
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                name = item["Key"][len(prefix):]
                yield (name, item["LastModified"]) if with_time else name

    def list_manifests(self):
        result = []
        problems = []
        try:
            for name in self._keys():
                if "/" in name or not name.endswith(MANIFEST_SUFFIX):
                    continue
                try:
                    body = self.client.get_object(Bucket=self.bucket, Key=self.key(name))["Body"].read()
                    manifest = json.loads(body.decode("utf-8"))
                    if not isinstance(manifest, dict):
                        raise ValueError("not a JSON object")
                    if manifest.get("id") + MANIFEST_SUFFIX != name:
                        raise ValueError("id does not match the key")
                    result.append(manifest)
                except (ValueError, TypeError) as exc:
                    problems.append("unreadable manifest %s: %s" % (name, exc))
        except (BotoCoreError, ClientError) as exc:
            raise self.error("listing %s failed" % self.describe(), exc)
        return result, problems

    def open_data(self, manifest):
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.key(manifest["archive"]["name"]))["Body"]
        except (BotoCoreError, ClientError) as exc:
            raise self.error("archive of %s cannot be read" % manifest["id"], exc)

    def delete(self, manifest):
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key(manifest["id"] + MANIFEST_SUFFIX))
            self.client.delete_object(Bucket=self.bucket, Key=self.key(manifest["archive"]["name"]))
        except (BotoCoreError, ClientError) as exc:
            raise self.error("deleting %s failed" % manifest["id"], exc)

    def cleanup(self):
        """Archives without a manifest are leftovers of killed runs (uploads are atomic).

        Only orphans older than an hour are removed: another host sharing the prefix may be
        between its upload and its manifest.
        """
        removed = []
        try:
            listing = list(self._keys(with_time=True))
            ids = set(n[:-len(MANIFEST_SUFFIX)] for n, _t in listing if n.endswith(MANIFEST_SUFFIX))
            horizon = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)
            for name, modified in listing:
                if ".tar.zst" in name and "/" not in name and name.split(".tar.zst")[0] not in ids and modified < horizon:
                    self.client.delete_object(Bucket=self.bucket, Key=self.key(name))
                    removed.append(name)
            if os.path.isdir(self.spool_dir):
                for name in os.listdir(self.spool_dir):
                    if name.startswith(".") and name.endswith(".part"):
                        os.unlink(os.path.join(self.spool_dir, name))
                        removed.append(name)
        except (BotoCoreError, ClientError) as exc:
            raise self.error("cleaning %s failed" % self.describe(), exc)
        return removed
