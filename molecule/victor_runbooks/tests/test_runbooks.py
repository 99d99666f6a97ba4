"""State after converge: every induced fault is gone and the bundles tell what happened."""
import glob
import json
import os

import pytest

REPORTS = os.path.join(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", ""), "runbook-reports")


def _bundles(runbook):
    paths = sorted(glob.glob(os.path.join(REPORTS, runbook + "-*.json")))
    return [json.load(open(p, encoding="utf-8")) for p in paths]


def test_api_is_healthy_at_the_end_on_the_release_rolled_back_to(host):
    assert host.service("victor-api").is_running
    answer = json.loads(host.check_output("curl -fsS http://127.0.0.1:8765/health"))
    assert answer == {"status": "healthy", "version": "0.9.4"}, "high_error_rate rolled 0.9.5 back to 0.9.4"


def test_lock_holder_is_gone_and_database_accepts_writes(host):
    assert not host.service("victor-db-locker").is_running
    probe = host.run("runuser -u victor -- python3 -c \"import sqlite3; c = sqlite3.connect('/var/lib/victor/.victor/victor.db', "
                     "timeout=1, isolation_level=None); c.execute('BEGIN IMMEDIATE'); c.execute('ROLLBACK')\"")
    assert probe.rc == 0, probe.stderr


def test_emergency_restart_killed_only_the_units_processes(host):
    assert host.run("pgrep -f '[v]ictor-api-stuck-child'").rc == 1
    assert host.service("victor-api-decoy").is_running, "a look-alike outside the unit must survive"


def test_api_server_down_restarted_then_left_a_healthy_api_alone():
    first, second = sorted(_bundles("api_server_down"), key=lambda b: b["started_at"])
    before = first["diagnostics"]["before"]
    assert before["service"]["ActiveState"] != "active"
    assert not before["health"]["ok"] and before["health"]["error"]
    assert not before["port"]["listening"]
    assert first["actions"] == {"restarted": True} and first["healthy"]
    assert first["diagnostics"]["after"]["health"]["body"]["status"] == "healthy"
    assert second["actions"] == {"restarted": False} and second["healthy"]
    assert second["diagnostics"]["before"]["service"]["MainPID"] == second["diagnostics"]["after"]["service"]["MainPID"]
    assert second["diagnostics"]["before"]["port"]["owners"][0]["in_unit"]


def test_database_runbook_cleared_the_foreign_lock_then_did_nothing():
    first, second = sorted(_bundles("database_connection_failed"), key=lambda b: b["started_at"])
    db = first["diagnostics"]["before"]["database"]
    assert db["locked"] and db["probe"]["error"] == "database is locked"
    assert db["foreign_holders"], db
    holder = next(h for h in db["holders"] if h["pid"] in db["foreign_holders"])
    assert "BEGIN IMMEDIATE" in holder["cmdline"] and not holder["in_unit"]
    assert [h["pid"] for h in first["actions"]["locks_cleared"]] == db["foreign_holders"]
    assert first["actions"]["restarted"] and first["healthy"]
    assert first["diagnostics"]["after"]["database"]["probe"]["writable"]
    assert second["actions"] == {"killed": [], "locks_cleared": [], "restarted": False}
    assert not second["diagnostics"]["before"]["database"]["locked"]


def test_emergency_restart_needed_the_kill_and_replaced_every_process():
    (bundle,) = _bundles("emergency_restart")
    before = bundle["diagnostics"]["before"]
    assert not before["health"]["ok"], "the frozen API must have failed its health check"
    cmdlines = [p["cmdline"] for p in before["service"]["processes"]]
    assert any("victor-api-stuck-child" in c for c in cmdlines), cmdlines
    assert bundle["actions"]["stopped_gracefully"] is False and bundle["actions"]["killed"] is True
    after_pids = set(bundle["diagnostics"]["after"]["service"]["pids"])
    assert after_pids and not after_pids & set(before["service"]["pids"])
    assert bundle["healthy"]


@pytest.mark.parametrize("threshold, restarted", [(100000, False), (64, True)])
def test_high_memory_restarts_only_over_the_threshold(threshold, restarted):
    bundle = next(b for b in _bundles("high_memory") if b["actions"]["threshold_mb"] == threshold)
    memory = bundle["diagnostics"]["before"]["memory"]
    assert memory["unit_rss_mb"] > 64, "victor serve uses well over 64 MiB"
    assert memory["top"] and memory["top"][0]["in_unit"], "victor is the top consumer in its container"
    assert bundle["actions"]["restarted"] is restarted
    assert bundle["actions"]["over_unit_threshold"] is restarted
    same_pid = bundle["diagnostics"]["before"]["service"]["MainPID"] == bundle["diagnostics"]["after"]["service"]["MainPID"]
    assert same_pid is not restarted
    assert bundle["healthy"]


def test_provider_rate_limiting_found_the_429s_of_the_provider_and_changed_nothing():
    (bundle,) = _bundles("provider_rate_limiting")
    logs = bundle["diagnostics"]["before"]["logs"]["after"]
    assert logs["rate_limited"] > 0 and "ollama" in logs["rate_limited_providers"], logs
    assert any("429" in sample for sample in logs["rate_limit_samples"]), logs["rate_limit_samples"]
    assert bundle["actions"]["changed"] is False and bundle["actions"]["providers"] == logs["rate_limited_providers"]
    assert any("ollama" in line and "rate limiting" in line for line in bundle["summary"]), bundle["summary"]
    assert bundle["healthy"]


def test_high_error_rate_check_mode_then_rollback_then_nothing():
    check, real, again = sorted(_bundles("high_error_rate"), key=lambda b: b["started_at"])
    assert check["check_mode"] and check["actions"]["would_roll_back"] and not check["actions"]["rolled_back"]
    logs = real["diagnostics"]["before"]["logs"]
    assert logs["after"]["errors"] >= 3 and logs["after"]["requests"] >= 3, logs["after"]
    assert logs["before"]["errors"] == 0, "0.9.4 logged no error before the 0.9.5 deploy"
    assert any("Agentic loop error" in sample for sample in logs["after"]["samples"]), logs["after"]["samples"]
    assert real["actions"]["high_error_rate"] and real["actions"]["rose_after_deploy"]
    assert real["actions"]["deployed"] == "0.9.5" and real["actions"]["rolled_back_to"] == "0.9.4"
    assert real["diagnostics"]["after"]["health"]["body"] == {"status": "healthy", "version": "0.9.4"}
    assert not again["check_mode"] and not again["actions"]["high_error_rate"] and not again["actions"]["rolled_back"]
    assert again["diagnostics"]["before"]["logs"]["after"]["errors"] == 0


def test_high_cpu_restarts_only_a_unit_stuck_above_the_threshold(host):
    idle, busy = sorted(_bundles("high_cpu"), key=lambda b: b["started_at"])[-2:]
    assert not idle["actions"]["stuck"] and not idle["actions"]["restarted"]
    cpu = busy["diagnostics"]["before"]["cpu"]
    assert cpu["min_percent"] > 10 and len(cpu["samples_percent"]) == 5, cpu
    assert "victor-cpu-hog" in cpu["top"][0]["cmdline"], cpu["top"]
    assert busy["actions"]["stuck"] and busy["actions"]["restarted"] and busy["healthy"]
    assert host.run("pgrep -f '[v]ictor-cpu-hog'").rc == 1, "the restart ended the unit's busy process"


def test_cache_issues_counted_in_check_mode_then_cleared_only_the_pattern(host):
    check, real, again = sorted(_bundles("cache_issues"), key=lambda b: b["started_at"])
    assert check["check_mode"] and check["actions"]["would_remove_keys"] == 12000 and check["actions"]["removed_keys"] == 0
    before = real["diagnostics"]["before"]["redis"]
    assert before["maxmemory"] == 4 * 1024 * 1024 and before["used_percent_of_max"] >= 90, before
    assert before["matching_keys"] == 12000 and before["keys"] == 12002
    assert real["actions"]["at_limit"] and real["actions"]["removed_keys"] == 12000
    assert real["actions"]["memory_after"] < real["actions"]["memory_before"]
    assert real["diagnostics"]["after"]["redis"]["used_percent_of_max"] < 90
    assert not again["actions"]["at_limit"] and again["actions"]["removed_keys"] == 0
    assert host.check_output("redis-cli dbsize") == "2"
    assert host.check_output("redis-cli get session:keep-1") == "a", "keys outside the pattern stay"
