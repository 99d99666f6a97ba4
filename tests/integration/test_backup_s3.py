"""victor_backup S3 storage through real boto3 over HTTP to a moto server on 127.0.0.1.

Run: cd <collection> && pytest -q tests/integration/test_backup_s3.py
(moto_server comes from the venv; it is started on a free loopback port and stopped by pid).
"""
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time

import pytest

import backup_calls as bc
boto3 = pytest.importorskip("boto3")

from ansible_collections.victor.ops.plugins.module_utils.backup_common import BackupError, MANIFEST_SUFFIX, parse_time  # noqa: E402
from ansible_collections.victor.ops.plugins.module_utils import backup_s3  # noqa: E402

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def moto():
    server = shutil.which("moto_server") or os.path.join(os.path.dirname(sys.executable), "moto_server")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([server, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = "http://127.0.0.1:%d" % port
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(10)


def _store(url, bucket, tmp_path, **kwargs):
    client = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
    try:
        client.create_bucket(Bucket=bucket)
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass
    args = dict(prefix="victor/backups", region="us-east-1", endpoint_url=url, access_key="test", secret_key="test",
                multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB, spool_dir=str(tmp_path / "spool"),
                request_checksum_calculation="when_required", response_checksum_validation="when_required",
                validate_certs=True, timeout=60.0)
    args.update(kwargs)
    return backup_s3.S3Store(bucket, **args), client


def _state(tmp_path, log_mib=12):
    state = tmp_path / "state"
    (state / "logs").mkdir(parents=True)
    conn = sqlite3.connect(str(state / "victor.db"))
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    conn.executemany("INSERT INTO t (v) VALUES (?)", [("marker-%d" % i,) for i in range(500)])
    conn.commit()
    conn.close()
    (state / "profiles.yaml").write_text("default: {}\n")
    with open(str(state / "logs" / "victor.log"), "wb") as handle:
        handle.write(os.urandom(log_mib * MIB))  # incompressible: the archive needs multipart
    return state


def test_multipart_upload_checked_listed_verified_restored(moto, tmp_path):
    store, client = _store(moto, "victor-a", tmp_path, sse="AES256")
    state = _state(tmp_path)
    full = bc.create_backup(store, str(state), str(tmp_path / "work"), bc.Tools())
    assert full["archive"]["multipart"] is True and full["archive"]["upload_check"] == "size+md5"
    assert full["archive"]["etag"].endswith('-3"')  # 12 MiB in 5 MiB parts
    head = client.head_object(Bucket="victor-a", Key="victor/backups/" + full["archive"]["name"])
    assert head["ContentLength"] == full["archive"]["size"]
    assert head["ServerSideEncryption"] == "AES256"
    with open(str(state / "profiles.yaml"), "a") as handle:
        handle.write("changed: 1\n")
    inc = bc.create_backup(store, str(state), str(tmp_path / "work"), bc.Tools(), backup_type="incremental")
    assert inc["archive"]["multipart"] is False and inc["parent"] == full["id"]
    listed, problems = store.list_manifests()
    assert problems == [] and sorted(m["id"] for m in listed) == sorted([full["id"], inc["id"]])
    assert bc.verify_backup(store, listed, inc, bc.Tools(), str(tmp_path / "verify"))["ok"]
    assert os.listdir(str(tmp_path / "spool")) == []  # spooled archives are removed
    shutil.rmtree(str(state))
    bc.restore_backup(store, store.list_manifests()[0], inc, bc.Tools(), str(state))
    conn = sqlite3.connect(str(state / "victor.db"))
    assert conn.execute("SELECT count(*) FROM t WHERE v LIKE 'marker-%'").fetchone()[0] == 500
    conn.close()
    assert (state / "profiles.yaml").read_text().endswith("changed: 1\n")


def test_corrupt_upload_is_detected_and_never_listed(moto, tmp_path, monkeypatch):
    store, client = _store(moto, "victor-b", tmp_path)
    state = _state(tmp_path, log_mib=1)
    monkeypatch.setattr(backup_s3, "expected_etag", lambda path, threshold, chunk: '"0000"')
    with pytest.raises(BackupError, match="the upload is corrupt"):
        bc.create_backup(store, str(state), str(tmp_path / "work"), bc.Tools())
    assert store.list_manifests() == ([], [])


def test_tampered_object_fails_verify(moto, tmp_path):
    store, client = _store(moto, "victor-c", tmp_path)
    state = _state(tmp_path, log_mib=1)
    manifest = bc.create_backup(store, str(state), str(tmp_path / "work"), bc.Tools())
    key = "victor/backups/" + manifest["archive"]["name"]
    body = bytearray(client.get_object(Bucket="victor-c", Key=key)["Body"].read())
    body[len(body) // 2] ^= 0x10
    client.put_object(Bucket="victor-c", Key=key, Body=bytes(body))
    listed = store.list_manifests()[0]
    assert not bc.verify_backup(store, listed, manifest, bc.Tools(), str(tmp_path / "v"), record=False)["ok"]
    before = (state / "profiles.yaml").read_text()
    with pytest.raises(BackupError):
        bc.restore_backup(store, listed, manifest, bc.Tools(), str(state))
    assert (state / "profiles.yaml").read_text() == before


def test_prune_deletes_manifest_and_archive(moto, tmp_path):
    store, client = _store(moto, "victor-d", tmp_path)
    state = _state(tmp_path, log_mib=1)
    old = bc.create_backup(store, str(state), str(tmp_path / "work"), bc.Tools(), now=parse_time("2025-01-01T02:00:00Z"))
    new = bc.create_backup(store, str(state), str(tmp_path / "work"), bc.Tools(), now=parse_time("2025-01-02T02:00:00Z"))
    store.delete(old)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="victor-d")["Contents"]]
    assert sorted(k.rsplit("/", 1)[1] for k in keys) == sorted([new["id"] + MANIFEST_SUFFIX, new["archive"]["name"]])


@pytest.mark.parametrize("body", [b"[]", b"null", b"{}", b"7"])
def test_manifest_that_is_not_an_object_is_reported_not_a_traceback(moto, tmp_path, body):
    store, client = _store(moto, "victor-m", tmp_path)
    client.put_object(Bucket="victor-m", Key="victor/backups/20260101T000000Z-full.manifest.json", Body=body)
    manifests, problems = store.list_manifests()
    assert all(m.get("id") != "20260101T000000Z-full" for m in manifests)
    assert any("20260101T000000Z-full" in p for p in problems), problems
