#!/usr/bin/env python
"""Constant HTTP load for the zero-downtime measurement (stdlib only, bounded in time).

Runs N workers that GET one URL in a loop until a stop file appears or --max-seconds
pass, and writes a JSON summary: requests, ok (HTTP 200), failed (anything else, by
reason), the versions reported by Victor's /health and the times of the first and last
failure. Used by molecule/victor_nginx_lb/side_effect.yml from inside the nginx
container, so the traffic stays on the scenario's docker network.

    python3 zero_downtime_load.py --url http://127.0.0.1/health --stop-file /tmp/stop --out /tmp/load.json
"""
import argparse
import collections
import json
import os
import threading
import time
import urllib.error
import urllib.request


def _one(url, timeout):
    """Return (reason, version): reason is 'ok' for HTTP 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body = resp.read()
            if resp.status != 200:
                return "http_%d" % resp.status, None
    except urllib.error.HTTPError as exc:
        return "http_%d" % exc.code, None
    except (urllib.error.URLError, OSError) as exc:
        return type(getattr(exc, "reason", exc)).__name__, None
    try:
        version = json.loads(body).get("version")
    except ValueError:
        version = None
    return "ok", version


def run(url, workers, max_seconds, stop_file, pause, timeout):
    """Generate load until the stop file exists or max_seconds passed; return the summary."""
    lock = threading.Lock()
    reasons = collections.Counter()
    versions = collections.Counter()
    failure_times = []
    start = time.monotonic()
    deadline = start + max_seconds

    def stopped():
        return time.monotonic() >= deadline or (stop_file and os.path.exists(stop_file))

    def loop():
        while not stopped():
            reason, version = _one(url, timeout)
            with lock:
                reasons[reason] += 1
                if version:
                    versions[version] += 1
                if reason != "ok":
                    failure_times.append(round(time.monotonic() - start, 3))
            if pause:
                time.sleep(pause)

    threads = [threading.Thread(target=loop, daemon=True) for dummy in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = sum(reasons.values())
    return {
        "url": url,
        "workers": workers,
        "seconds": round(time.monotonic() - start, 2),
        "requests": total,
        "ok": reasons["ok"],
        "failed": total - reasons["ok"],
        "failure_reasons": {k: v for k, v in reasons.items() if k != "ok"},
        "versions": dict(versions),
        "first_failure_s": failure_times[0] if failure_times else None,
        "last_failure_s": failure_times[-1] if failure_times else None,
        "stopped_by": "stop_file" if stop_file and os.path.exists(stop_file) else "max_seconds",
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--max-seconds", type=float, default=240.0)
    parser.add_argument("--stop-file", default="")
    parser.add_argument("--pause", type=float, default=0.01, help="seconds each worker sleeps between requests")
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.stop_file and os.path.exists(args.stop_file):
        os.unlink(args.stop_file)
    summary = run(args.url, args.workers, args.max_seconds, args.stop_file, args.pause, args.timeout)
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2, sort_keys=True)
    print(json.dumps(summary, sort_keys=True))


if __name__ == "__main__":
    main()
