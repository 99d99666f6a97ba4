# -*- coding: utf-8 -*-
# Copyright: victor.ops contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    """Where victor_backup and victor_backup_info find the backups (backup_s3.storage_argument_spec())."""

    DOCUMENTATION = r"""
options:
  storage:
    description: Where backups are kept.
    type: str
    choices: [local, s3]
    default: local
  repository:
    description: Local directory holding the backups (O(storage=local)).
    type: path
    default: /var/backups/victor
  s3_bucket:
    description: S3 bucket (O(storage=s3)).
    type: str
  s3_prefix:
    description: Key prefix inside the bucket.
    type: str
    default: victor-backups
  s3_region:
    description: S3 region.
    type: str
  s3_endpoint_url:
    description:
      - S3 endpoint URL for S3-compatible stores (MinIO, Ceph, ...), V(http://) or V(https://) with a host.
      - Not logged. C(user:password@) in it is refused; give O(s3_access_key) and O(s3_secret_key).
    type: str
  s3_access_key:
    description: Access key id; boto3's usual credential chain is used when unset.
    type: str
  s3_secret_key:
    description: Secret access key (never logged).
    type: str
  s3_session_token:
    description: Session token for temporary credentials (never logged).
    type: str
  s3_sse:
    description: Server-side encryption of uploaded objects.
    type: str
    choices: [AES256, "aws:kms"]
  s3_sse_kms_key_id:
    description: KMS key id for O(s3_sse=aws:kms).
    type: str
  s3_multipart_threshold:
    description: Archives of this many bytes or more are uploaded in parts.
    type: int
    default: 67108864
  s3_multipart_chunksize:
    description: Size of each part of a multipart upload, in bytes (at least 5 MiB).
    type: int
    default: 16777216
  s3_request_checksum_calculation:
    description:
      - botocore 1.36+ sends CRC checksums with every upload by default, which several
        S3-compatible stores reject; V(when_required) sends them only where the API requires.
    type: str
    choices: [when_supported, when_required]
  s3_response_checksum_validation:
    description: botocore 1.36+ response checksum validation.
    type: str
    choices: [when_supported, when_required]
  s3_validate_certs:
    description: Verify the TLS certificate of the S3 endpoint.
    type: bool
    default: true
  s3_timeout:
    description:
      - Longest wait in seconds for an S3 endpoint that does not answer one request, retries included
        (3 tries of a third each, plus a few seconds of backoff); greater than 0, at most 3600.
      - It bounds waiting for an answer, not the duration of a transfer that is making progress.
    type: float
    default: 60.0
requirements:
  - boto3 (Debian package C(python3-boto3)) for O(storage=s3)
"""
