"""Test fault: a release that turns bad after its health gate.

Once /health on this backend reports VERSION, wait DELAY seconds, then freeze the unit
victor-api with SIGSTOP (its port still accepts connections, nothing answers). Gives up
after DEADLINE seconds without that version.
"""
import json
import subprocess
import sys
import time
import urllib.request

version, delay, deadline = sys.argv[1], float(sys.argv[2]), time.time() + float(sys.argv[3])
while True:
    try:
        with urllib.request.urlopen('http://127.0.0.1:8765/health', timeout=3) as answer:
            if json.load(answer).get('version') == version:
                break
    except (OSError, ValueError):
        pass
    if time.time() > deadline:
        sys.exit('victor-api never served %s' % version)
    time.sleep(1)
time.sleep(delay)
subprocess.run(['systemctl', 'kill', '--signal=SIGSTOP', 'victor-api'], check=True)
print('victor-api %s frozen %s s after it served' % (version, delay))
