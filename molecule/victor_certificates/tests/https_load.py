"""HTTPS load through nginx while a certificate is renewed: new TLS connection per request.

Runs in the container: python3 https_load.py ROOT_CA STOP_FILE MAX_SECONDS. Two clients
GET /health (Host and SNI victor-lb.test, chain verified against pebble's root) until
STOP_FILE exists; prints JSON: requests, failures, first errors, certificate fingerprints
in the order they were first seen.
"""
import hashlib
import json
import os
import socket
import ssl
import sys
import threading
import time

ROOT, STOP, MAX_SECONDS = sys.argv[1], sys.argv[2], float(sys.argv[3])
CONTEXT = ssl.create_default_context(cafile=ROOT)
LOCK = threading.Lock()
RESULT = {'requests': 0, 'failures': 0, 'errors': [], 'fingerprints': []}


def one():
    with socket.create_connection(('127.0.0.1', 443), timeout=5) as raw:
        with CONTEXT.wrap_socket(raw, server_hostname='victor-lb.test') as tls:
            fingerprint = hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()
            tls.sendall(b'GET /health HTTP/1.1\r\nHost: victor-lb.test\r\nConnection: close\r\n\r\n')
            data = b''
            while True:
                chunk = tls.recv(65536)
                if not chunk:
                    break
                data += chunk
    return fingerprint, data.split(b'\r\n', 1)[0].decode(errors='replace')


def client(deadline):
    while time.time() < deadline and not os.path.exists(STOP):
        try:
            fingerprint, status = one()
            error = None if status.startswith('HTTP/1.1 200') else status
        except (OSError, ssl.SSLError) as exc:
            fingerprint, error = None, repr(exc)
        with LOCK:
            RESULT['requests'] += 1
            if error:
                RESULT['failures'] += 1
                RESULT['errors'] = (RESULT['errors'] + [error])[:5]
            elif fingerprint not in RESULT['fingerprints']:
                RESULT['fingerprints'].append(fingerprint)


end = time.time() + MAX_SECONDS
threads = [threading.Thread(target=client, args=(end,)), threading.Thread(target=client, args=(end,))]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(json.dumps(RESULT))
