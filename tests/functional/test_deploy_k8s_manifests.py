"""victor_deploy method kubernetes, proven without a cluster (none can run here).

The role itself renders the manifests (ansible-playbook, connection local, with
victor_deploy_k8s_render_dir: the template lookup and the role's defaults and vars, the way
a deploy renders them before kubernetes.core.k8s applies them; kubernetes.core.k8s cannot
run, not even in check mode, without an API server). Then:
- schema: every document validates strictly (unknown fields fail) against the JSON schemas
  of an older and the newest Kubernetes version kubernetes-validate ships;
- policy: checks that fail on the manifests of issue 18 (HOME on an emptyDir, an HPA over
  per-pod state, containers without resources, probes or securityContext) and hold for
  every variant rendered here;
- validation: combinations the scaling model forbids fail before anything is rendered;
- rollback: by version (rendered) and by revision (the choice of the ControllerRevision);
- secrets: never in the output of a `--diff -v` run.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

kubernetes_validate = pytest.importorskip("kubernetes_validate")

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "victor_deploy"
# An older supported minor and the newest one kubernetes-validate knows.
K8S_VERSIONS = ["1.30.0", "1.37.0"]
SECRET = "sk-test-never-printed-0123456789"
S3_SECRET = "s3-secret-never-printed-987654"
HOME = "/var/lib/victor"
BACKUP = {
    "victor_deploy_k8s_backup_enabled": True,
    "victor_deploy_k8s_backup_image": "registry.example/victor-backup:1",
    "victor_deploy_k8s_backup_config": {"s3_bucket": "victor-bk", "s3_access_key": "AKIA1", "s3_secret_key": S3_SECRET,
                                        "keep_daily": 7},
}
VARIANTS = {
    "single": {},
    "sticky_hpa": {"victor_deploy_k8s_scaling": "sticky", "victor_deploy_k8s_replicas": 3,
                   "victor_deploy_k8s_hpa_enabled": True, "victor_deploy_k8s_max_replicas": 6},
    "single_backup": dict(BACKUP),
    "sticky_backup": dict(BACKUP, victor_deploy_k8s_scaling="sticky", victor_deploy_k8s_replicas=2,
                          victor_deploy_k8s_ingress_enabled=False),
}
INVALID = {
    "replicas_without_sticky": ({"victor_deploy_k8s_replicas": 3}, "victor_deploy_k8s_scaling must be single"),
    "hpa_over_one_writer": ({"victor_deploy_k8s_hpa_enabled": True}, "victor_deploy_k8s_hpa_enabled needs"),
    "hpa_with_backup": (dict(BACKUP, victor_deploy_k8s_scaling="sticky", victor_deploy_k8s_hpa_enabled=True),
                        "victor_deploy_k8s_hpa_enabled needs"),
    "backup_without_image": ({"victor_deploy_k8s_backup_enabled": True,
                              "victor_deploy_k8s_backup_config": {"s3_bucket": "b"}}, "needs victor_deploy_k8s_backup_image"),
    "unknown_scaling": ({"victor_deploy_k8s_scaling": "round-robin"}, "victor_deploy_k8s_scaling must be single"),
}
WORKLOADS = ("StatefulSet", "Deployment", "CronJob", "Job", "DaemonSet")


def _play(name, tasks_from, variables):
    return {"name": name, "hosts": "localhost", "gather_facts": False, "vars": variables,
            "tasks": [{"name": "Render", "ansible.builtin.include_role": {"name": "victor.ops.victor_deploy",
                                                                          "tasks_from": tasks_from}}]}


def _guarded(name, variables, out):
    """A play that records the role's failure message instead of failing."""
    play = _play(name, "main.yml", variables)
    play["tasks"] = [{"name": "Try", "block": play["tasks"], "rescue": [
        {"name": "Record", "ansible.builtin.copy": {"content": "{{ ansible_failed_result.msg }}", "dest": out,
                                                    "mode": "0600"}}]}]
    return play


def _base(tmp, name):
    return {"victor_deploy_method": "kubernetes", "victor_deploy_version": "0.9.5",
            "victor_deploy_environment": {"ANTHROPIC_API_KEY": SECRET},
            "victor_deploy_k8s_render_dir": str(tmp / name),
            # state.yml reads these: keep them inside the test directory
            "victor_deploy_root": str(tmp / "root"), "victor_deploy_service_manager": "process"}


@pytest.fixture(scope="module", name="run")
def run_fixture(tmp_path_factory):
    """One ansible-playbook run for every variant, the restore Job, a rollback and the invalid inputs."""
    tmp = tmp_path_factory.mktemp("k8s")
    plays = [_play(name, "main.yml", dict(_base(tmp, name), **extra)) for name, extra in VARIANTS.items()]
    plays.append(_play("restore", "restore_kubernetes.yml", dict(_base(tmp, "restore"), victor_deploy_k8s_restore_ordinal=1,
                                                                 victor_deploy_k8s_restore_backup_id="20261202T021700Z-full",
                                                                 **VARIANTS["sticky_backup"])))
    plays.append(_play("rollback", "rollback.yml", dict(_base(tmp, "rollback"), victor_deploy_rollback_to="0.9.4")))
    plays += [_guarded(name, dict(_base(tmp, name), **extra), str(tmp / (name + ".error")))
              for name, (extra, _msg) in INVALID.items()]
    (tmp / "play.yml").write_text(yaml.safe_dump(plays, sort_keys=False))
    env = dict(os.environ, ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
               ANSIBLE_PYTHON_INTERPRETER=sys.executable)
    proc = subprocess.run(["ansible-playbook", "-i", "localhost,", "-c", "local", "--diff", "-v", str(tmp / "play.yml")],
                          capture_output=True, text=True, env=env, timeout=300, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return tmp, proc.stdout + proc.stderr


def _docs(run, name, filename="victor.yml"):
    tmp, _out = run
    path = tmp / name / filename
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def _kinds(docs, kind):
    return [doc for doc in docs if doc["kind"] == kind]


def _one(docs, kind):
    (doc,) = _kinds(docs, kind)
    return doc


def _pod_spec(doc):
    spec = doc["spec"]
    if doc["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"]


# ----------------------------------------------------------------------------- policy
# Each returns a list of problems; they are the checks issue 18 asks for.

def policy_problems(docs):
    problems = []
    services = _kinds(docs, "Service")
    ingresses = _kinds(docs, "Ingress")
    for doc in docs:
        kind, name = doc["kind"], doc["metadata"]["name"]
        if kind == "ServiceAccount" and doc.get("automountServiceAccountToken") is not False:
            problems.append("%s: token automount" % name)
        if kind not in WORKLOADS:
            continue
        pod = _pod_spec(doc)
        if pod.get("automountServiceAccountToken") is not False:
            problems.append("%s/%s: token automount" % (kind, name))
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        claims = {t["metadata"]["name"] for t in doc["spec"].get("volumeClaimTemplates", [])}
        pod_sc = pod.get("securityContext", {})
        for container in pod["containers"]:
            cname = "%s/%s/%s" % (kind, name, container["name"])
            for mount in container.get("volumeMounts", []):
                if mount["mountPath"] == HOME and mount["name"] not in claims and "persistentVolumeClaim" not in volumes.get(mount["name"], {}):
                    problems.append("%s: Victor's HOME is not on a PersistentVolumeClaim" % cname)
            resources = container.get("resources", {})
            for part in ("requests", "limits"):
                if not {"cpu", "memory"} <= set(resources.get(part, {})):
                    problems.append("%s: no %s for cpu and memory" % (cname, part))
            sc = container.get("securityContext", {})
            if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
                problems.append("%s: may run as root" % cname)
            if sc.get("allowPrivilegeEscalation") is not False or sc.get("capabilities", {}).get("drop") != ["ALL"]:
                problems.append("%s: privilege escalation or capabilities not dropped" % cname)
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append("%s: writable root filesystem" % cname)
            if kind in ("StatefulSet", "Deployment"):
                for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                    if container.get(probe, {}).get("httpGet", {}).get("path") != "/health":
                        problems.append("%s: no %s on /health" % (cname, probe))
        if kind in ("StatefulSet", "Deployment"):
            labels = doc["spec"]["template"]["metadata"]["labels"]
            if not any(p["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
                       and p["spec"]["policyTypes"] == ["Ingress", "Egress"] for p in _kinds(docs, "NetworkPolicy")):
                problems.append("%s: no NetworkPolicy for ingress and egress" % name)
            if pod.get("serviceAccountName") not in [a["metadata"]["name"] for a in _kinds(docs, "ServiceAccount")]:
                problems.append("%s: no own ServiceAccount" % name)
        if kind == "Deployment" and any(m["mountPath"] == HOME for c in pod["containers"] for m in c.get("volumeMounts", [])):
            problems.append("%s: a Deployment surges a second pod onto the same state (use a StatefulSet)" % name)
    for hpa in _kinds(docs, "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        sticky = (any(s["spec"].get("sessionAffinity") == "ClientIP" for s in services)
                  and all(i["metadata"].get("annotations", {}).get("nginx.ingress.kubernetes.io/affinity") == "cookie"
                          for i in ingresses))
        if target["kind"] != "StatefulSet" or not sticky:
            problems.append("HPA %s scales per-pod state without sticky routing" % hpa["metadata"]["name"])
    return problems


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("variant", sorted(VARIANTS) + ["restore"])
def test_every_manifest_validates_strictly(run, variant, version):
    docs = _docs(run, variant, "restore-job.yml" if variant == "restore" else "victor.yml")
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_validation_would_catch_a_broken_manifest(run):
    sts = _one(_docs(run, "single"), "StatefulSet")
    sts["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = {"cores": 2}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(sts, K8S_VERSIONS[0], strict=True)


@pytest.mark.parametrize("variant", sorted(VARIANTS) + ["restore"])
def test_policy_holds(run, variant):
    docs = _docs(run, variant, "restore-job.yml" if variant == "restore" else "victor.yml")
    assert policy_problems(docs) == []


def test_policy_catches_the_defects_of_issue_18(run):
    """The checks above are not vacuous: each defect of the old manifests is reported."""
    docs = _docs(run, "sticky_hpa")
    sts = _one(docs, "StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    container = pod["containers"][0]
    del sts["spec"]["volumeClaimTemplates"]
    pod["volumes"].append({"name": "data", "emptyDir": {}})
    del container["resources"]["limits"]
    del container["startupProbe"]
    container["securityContext"] = {}
    del pod["securityContext"]["runAsNonRoot"]
    _one(docs, "Ingress")["metadata"]["annotations"] = {}
    docs = [d for d in docs if d["kind"] not in ("NetworkPolicy", "ServiceAccount")]
    problems = "\n".join(policy_problems(docs))
    for expected in ("HOME is not on a PersistentVolumeClaim", "no limits", "no startupProbe", "may run as root",
                     "privilege escalation", "writable root", "without sticky routing", "no NetworkPolicy",
                     "no own ServiceAccount"):
        assert expected in problems


def test_one_writer_by_default(run):
    docs = _docs(run, "single")
    sts = _one(docs, "StatefulSet")
    assert sts["spec"]["replicas"] == 1
    assert not _kinds(docs, "HorizontalPodAutoscaler") and not _kinds(docs, "Deployment")
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"] and claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    pod = sts["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts == {HOME: claim["metadata"]["name"], "/tmp": "tmp"}
    assert {v["name"]: list(v)[1] for v in pod["volumes"]} == {"tmp": "emptyDir"}
    assert pod["securityContext"]["runAsUser"] == 10001 and pod["securityContext"]["fsGroup"] == 10001
    service = [s for s in _kinds(docs, "Service") if s["metadata"]["name"] == "victor-api"][0]
    assert "sessionAffinity" not in service["spec"]
    assert _one(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    container = pod["containers"][0]
    assert container["image"] == "victor-ai:0.9.5"
    assert container["startupProbe"]["periodSeconds"] * container["startupProbe"]["failureThreshold"] >= 60


def test_sticky_scaling_pins_clients_and_scales_the_statefulset(run):
    docs = _docs(run, "sticky_hpa")
    hpa = _one(docs, "HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "victor-api"}
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 6)
    service = [s for s in _kinds(docs, "Service") if s["metadata"]["name"] == "victor-api"][0]
    assert service["spec"]["sessionAffinity"] == "ClientIP"
    annotations = _one(docs, "Ingress")["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/affinity"] == "cookie"
    assert annotations["nginx.ingress.kubernetes.io/affinity-mode"] == "persistent"


def test_ingress_is_tls_only_to_the_service(run):
    docs = _docs(run, "single")
    spec = _one(docs, "Ingress")["spec"]
    assert spec["tls"] == [{"hosts": ["victor.example.com"], "secretName": "victor-tls"}]
    backend = spec["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "victor-api", "port": {"name": "http"}}
    assert not _kinds(_docs(run, "sticky_backup"), "Ingress")


def test_network_policy_admits_ingress_and_monitoring_and_reaches_dns_and_providers_only(run):
    docs = _docs(run, "single")
    policy = [p for p in _kinds(docs, "NetworkPolicy") if p["metadata"]["name"] == "victor-api"][0]["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "victor-api"}
    (rule,) = policy["ingress"]
    sources = [peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for peer in rule["from"]]
    assert sources == ["ingress-nginx", "monitoring"] and all(list(peer) == ["namespaceSelector"] for peer in rule["from"])
    assert rule["ports"] == [{"protocol": "TCP", "port": 8765}]
    dns, providers = policy["egress"]
    assert dns["to"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "kube-system"}
    assert sorted(p["port"] for p in dns["ports"]) == [53, 53]
    assert providers["to"] == [{"ipBlock": {"cidr": "0.0.0.0/0", "except": [
        "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "100.64.0.0/10"]}}]
    assert providers["ports"] == [{"protocol": "TCP", "port": 443}]


def test_secrets_only_in_secrets_and_never_in_the_output(run):
    docs = _docs(run, "single_backup")
    secret = [d for d in _kinds(docs, "Secret") if d["metadata"]["name"] == "victor-secrets"][0]
    assert secret["stringData"] == {"ANTHROPIC_API_KEY": SECRET}
    for doc in docs:
        if doc["kind"] != "Secret":
            assert SECRET not in json.dumps(doc) and S3_SECRET not in json.dumps(doc)
    _tmp, out = run
    # the run had --diff and -v: without no_log the rendered text would be printed
    assert "victor-backup-config" in out or "Render" in out
    assert SECRET not in out and S3_SECRET not in out


def test_backup_cronjob_runs_the_collections_backup_per_pod(run):
    docs = _docs(run, "sticky_backup")
    jobs = _kinds(docs, "CronJob")
    assert [j["metadata"]["name"] for j in jobs] == ["victor-backup-0", "victor-backup-1"]
    config = _one([d for d in docs if d["metadata"]["name"] == "victor-backup-config"], "Secret")["stringData"]
    code = [d for d in docs if d["metadata"]["name"] == "victor-backup-code"][0]["data"]
    assert code["backup_cli.py"] == (ROOT / "plugins" / "module_utils" / "backup_cli.py").read_text(encoding="utf-8")
    for ordinal, job in enumerate(jobs):
        assert job["spec"]["concurrencyPolicy"] == "Forbid"
        pod = _pod_spec(job)
        assert pod["hostname"] == "victor-api-%d" % ordinal  # the manifests' host: retention groups by it
        term = pod["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
        assert term["labelSelector"]["matchLabels"] == {"statefulset.kubernetes.io/pod-name": "victor-api-%d" % ordinal}
        (container,) = pod["containers"]
        assert container["command"][:3] == ["python3", "-m", "ansible_collections.victor.ops.plugins.module_utils.backup_cli"]
        assert container["command"][3:] == ["--config", "/etc/victor-backup/backup.json", "create", "--type", "full",
                                            "--scope", "full", "--prune"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["data"]["persistentVolumeClaim"] == {"claimName": "data-victor-api-%d" % ordinal, "readOnly": True}
        assert volumes["config"]["secret"]["items"] == [{"key": "victor-api-%d.json" % ordinal, "path": "backup.json"}]
        assert volumes["config"]["secret"]["defaultMode"] == 0o400
        cfg = json.loads(config["victor-api-%d.json" % ordinal])
        assert cfg["source"] == HOME + "/.victor" and cfg["storage"] == "s3" and cfg["s3_bucket"] == "victor-bk"
        assert cfg["s3_prefix"] == "victor-backups/victor-api-%d" % ordinal and cfg["keep_daily"] == 7
    policy = [p for p in _kinds(docs, "NetworkPolicy") if p["metadata"]["name"] == "victor-backup"][0]["spec"]
    assert policy["ingress"] == [] and policy["policyTypes"] == ["Ingress", "Egress"]


def test_restore_job_targets_one_claim_with_the_backup_config(run):
    (job,) = _docs(run, "restore", "restore-job.yml")
    pod = job["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"] == {"claimName": "data-victor-api-1"}
    assert volumes["config"]["secret"]["items"] == [{"key": "victor-api-1.json", "path": "backup.json"}]
    command = pod["containers"][0]["command"]
    # the timers' program restores the chosen backup into the config's source (the claim)
    assert command == ["python3", "-m", "ansible_collections.victor.ops.plugins.module_utils.backup_cli",
                       "--config", "/etc/victor-backup/backup.json", "restore", "20261202T021700Z-full"]


def test_rollback_by_version_renders_that_version_on_the_same_claims(run):
    old, new = _one(_docs(run, "rollback"), "StatefulSet"), _one(_docs(run, "single"), "StatefulSet")
    assert old["spec"]["template"]["spec"]["containers"][0]["image"] == "victor-ai:0.9.4"
    assert old["metadata"]["labels"]["app.kubernetes.io/version"] == "0.9.4"
    assert old["spec"]["volumeClaimTemplates"] == new["spec"]["volumeClaimTemplates"]


@pytest.mark.parametrize("case", sorted(INVALID))
def test_forbidden_combinations_fail_with_a_clear_message(run, case):
    tmp, _out = run
    _extra, message = INVALID[case]
    assert message in (tmp / (case + ".error")).read_text(encoding="utf-8")
    assert not (tmp / case / "victor.yml").exists()


def _choose(revisions, current_name, wanted):
    """The 'Choose the revision' task of tasks/rollback_kubernetes.yml, templated as Ansible does."""
    tasks = yaml.safe_load((ROLE / "tasks" / "rollback_kubernetes.yml").read_text(encoding="utf-8"))
    block = next(t for t in tasks if "block" in t)["block"]
    task = next(t for t in block if t["name"] == "Choose the revision")
    variables = {"__victor_deploy_k8s_revisions": {"resources": revisions},
                 "__victor_deploy_k8s_sts": {"resources": [{"status": {"updateRevision": current_name}}]},
                 "victor_deploy_k8s_rollback_revision": wanted}
    templar = Templar(loader=DataLoader(), variables=variables)
    inner = templar.template(trust_as_template(task["vars"]["__victor_deploy_k8s_current_revision"]))
    templar = Templar(loader=DataLoader(), variables=dict(variables, __victor_deploy_k8s_current_revision=inner))
    return templar.template(trust_as_template(task["ansible.builtin.set_fact"]["__victor_deploy_k8s_rollback_to_name"])).strip()


def test_rollback_chooses_the_named_or_the_previous_revision():
    revisions = [{"metadata": {"name": "victor-api-%s" % h}, "revision": n}
                 for n, h in ((1, "aaa"), (2, "bbb"), (4, "ddd"), (3, "ccc"))]
    assert _choose(revisions, "victor-api-ddd", 2) == "victor-api-bbb"
    assert _choose(revisions, "victor-api-ddd", 0) == "victor-api-ccc"
    assert _choose(revisions, "victor-api-aaa", 0) == ""
    assert _choose(revisions, "victor-api-ddd", 7) == ""
