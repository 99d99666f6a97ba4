"""victor_deploy method kubernetes: the rendered manifests are valid Kubernetes objects.

No API server can run here, so the role's template is rendered with the role defaults
(plus a secret and the version) and each document is validated against the Kubernetes
JSON schemas (kubernetes-validate, strict: unknown fields fail), then checked for the
production guide's settings (seed 002).
"""
import json
from pathlib import Path

import jinja2
import pytest
import yaml

kubernetes_validate = pytest.importorskip("kubernetes_validate")

ROLE = Path(__file__).resolve().parents[2] / "roles" / "victor_deploy"
K8S_VERSIONS = ["1.29.0", "1.33.0"]


def _combine(base, other):
    merged = dict(base)
    merged.update(other)
    return merged


def _render(**overrides):
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text(encoding="utf-8"))
    values = {k: v for k, v in defaults.items() if k.startswith("victor_deploy_k8s_")}
    values.update(
        victor_deploy_version="0.9.5",
        victor_deploy_port=defaults["victor_deploy_port"],
        victor_deploy_log_level=defaults["victor_deploy_log_level"],
        victor_deploy_keep_releases=defaults["victor_deploy_keep_releases"],
        victor_deploy_environment={"ANTHROPIC_API_KEY": "sk-test-\"quoted\"", "OPENAI_API_KEY": "x"},
    )
    values.update(overrides)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(ROLE / "templates")), undefined=jinja2.StrictUndefined)
    env.filters["to_json"] = json.dumps
    env.filters["combine"] = _combine
    text = env.get_template("k8s/victor.yml.j2").render(**values)
    return [doc for doc in yaml.safe_load_all(text) if doc]


def _by_kind(docs):
    return {doc["kind"]: doc for doc in docs}


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_validates_strictly(version):
    docs = _render()
    assert sorted(d["kind"] for d in docs) == sorted(
        ["ConfigMap", "Secret", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"])
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_validation_would_catch_a_broken_manifest():
    deployment = _by_kind(_render())["Deployment"]
    deployment["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)


def test_deployment_matches_the_production_guide():
    deployment = _by_kind(_render())["Deployment"]
    spec = deployment["spec"]
    assert spec["replicas"] == 3
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 1000
    (container,) = pod["containers"]
    assert container["image"] == "victor-ai:0.9.5"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"] == {"requests": {"memory": "512Mi", "cpu": "500m"},
                                      "limits": {"memory": "2Gi", "cpu": "2000m"}}
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    # a read-only root needs writable HOME and /tmp
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/home/victor", "/tmp"} <= mounts
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()


def test_hpa_pdb_and_service_target_the_deployment():
    kinds = _by_kind(_render())
    hpa = kinds["HorizontalPodAutoscaler"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 10)
    targets = {m["resource"]["name"]: m["resource"]["target"]["averageUtilization"] for m in hpa["metrics"]}
    assert targets == {"cpu": 70, "memory": 80}
    assert hpa["scaleTargetRef"]["name"] == kinds["Deployment"]["metadata"]["name"]
    pod_labels = kinds["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert kinds["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert kinds["PodDisruptionBudget"]["spec"]["minAvailable"] == 2
    assert kinds["Service"]["spec"]["selector"].items() <= pod_labels.items()


def test_secret_carries_the_environment_and_configmap_the_rest():
    kinds = _by_kind(_render())
    assert kinds["Secret"]["stringData"]["ANTHROPIC_API_KEY"] == 'sk-test-"quoted"'
    assert "ANTHROPIC_API_KEY" not in json.dumps(kinds["ConfigMap"])
    empty = _by_kind(_render(victor_deploy_environment={}))["Secret"]
    kubernetes_validate.validate(empty, K8S_VERSIONS[0], strict=True)
