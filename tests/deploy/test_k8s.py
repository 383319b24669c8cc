"""deploy/k8s: every overlay renders with `kubectl kustomize` and validates against the
Kubernetes schemas offline (kubernetes-validate ships them), and describes what we document."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy._tools import ROOT, missing

K8S = ROOT / "deploy" / "k8s"
# Oldest and newest Kubernetes minors the manifests are meant for.
K8S_VERSIONS = ["1.29.0", "1.34.0"]
# Custom resources kubernetes-validate has no schema for (it ships only the built-in kinds).
CUSTOM_KINDS = {("keda.sh/v1alpha1", "ScaledObject")}
RENDERED = sorted(
    [p.relative_to(K8S) for p in (K8S / "overlays").iterdir() if p.is_dir()]
    + [p.relative_to(K8S) for p in (K8S / "examples").iterdir() if p.is_dir()],
    key=str,
)

Doc = dict[str, Any]


def kustomize(path: Path) -> list[Doc]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        missing("kubectl is not installed (it renders the kustomizations)")
    done = subprocess.run(
        [str(kubectl), "kustomize", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Doc]]:
    return {str(p): kustomize(K8S / p) for p in RENDERED}


def one(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(name)]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def pod_spec(doc: Doc) -> Doc:
    spec: Doc = doc["spec"]["template"]["spec"]
    return spec


def container(doc: Doc) -> Doc:
    c: Doc = pod_spec(doc)["containers"][0]
    return c


def test_every_overlay_is_rendered() -> None:
    assert {"overlays/gpu", "overlays/cpu", "overlays/quickstart", "overlays/gpu-autoscaled"} <= {
        str(p) for p in RENDERED
    }
    assert "examples/tune-job" in {str(p) for p in RENDERED}


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("overlay", [str(p) for p in RENDERED])
def test_overlay_validates_against_kubernetes_schemas(
    rendered: dict[str, list[Doc]], overlay: str, version: str
) -> None:
    docs = rendered[overlay]
    assert docs
    for doc in docs:
        key = (doc["apiVersion"], doc["kind"])
        if key in CUSTOM_KINDS:
            with pytest.raises(kubernetes_validate.SchemaNotFoundError):
                kubernetes_validate.validate(doc, version, strict=True)
            continue
        # strict: a misspelt field is an error, not silently ignored by the API server
        kubernetes_validate.validate(doc, version, strict=True)
        assert doc["metadata"].get("namespace") == "regtune"


def test_example_secrets_validate_and_hold_no_real_secret() -> None:
    docs = [d for d in yaml.safe_load_all((K8S / "base" / "secret.example.yaml").read_text()) if d]
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)
        assert all("CHANGE-ME" in v for v in doc["stringData"].values())
    assert {d["metadata"]["name"] for d in docs} == {"regtune", "regtune-ci"}


def test_gpu_overlay_one_gpu_per_worker_and_graceful_stop(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["overlays/gpu"]
    worker = one(docs, "Deployment", "regtune-worker")
    c = container(worker)
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert c["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert c["args"][:3] == ["worker", "--devices", "auto"]
    assert c["args"][c["args"].index("--trials-per-device") + 1] == "1"
    assert c["image"].startswith("registry.example.com/regtune-worker:")
    # SIGTERM ends the trial at the next epoch boundary; the heartbeat sweep (120 s) is the
    # fallback: the grace period must leave the worker more than that to finish cleanly
    assert pod_spec(worker)["terminationGracePeriodSeconds"] > 120
    assert any(v["mountPath"] == "/dev/shm" for v in c["volumeMounts"])
    pdb = one(docs, "PodDisruptionBudget", "regtune-worker")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= (
        worker["spec"]["template"]["metadata"]["labels"].items()
    )


def test_api_probes_service_and_migrations(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["overlays/gpu"]
    api = one(docs, "Deployment", "regtune-api")
    c = container(api)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["path"] == "/healthz"
    assert c["args"][:3] == ["serve", "--workers", "0"]
    labels = api["spec"]["template"]["metadata"]["labels"]
    svc = one(docs, "Service", "regtune-api")
    assert svc["spec"]["selector"].items() <= labels.items()
    assert svc["spec"]["ports"][0]["port"] == 8000
    pdb = one(docs, "PodDisruptionBudget", "regtune-api")
    assert pdb["spec"]["minAvailable"] < api["spec"]["replicas"]
    job = one(docs, "Job", "regtune-migrate")
    assert "regtune db upgrade" in " ".join(container(job)["command"])
    for doc in (api, job, one(docs, "Deployment", "regtune-worker")):
        spec = pod_spec(doc)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["serviceAccountName"] == "regtune"


def test_cpu_overlay_requests_no_gpu(rendered: dict[str, list[Doc]]) -> None:
    worker = one(rendered["overlays/cpu"], "Deployment", "regtune-worker")
    c = container(worker)
    assert "nvidia.com/gpu" not in str(c["resources"])
    assert c["args"] == ["worker", "--devices", "cpu"]
    assert "tolerations" not in pod_spec(worker)
    assert ":" in c["image"] and "regtune-worker" not in c["image"]


def test_quickstart_is_self_contained(rendered: dict[str, list[Doc]]) -> None:
    """Every Secret a pod reads is in the rendering, and the URL names the database Service."""
    docs = rendered["overlays/quickstart"]
    secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    for doc in docs:
        if doc["kind"] not in ("Deployment", "StatefulSet", "Job"):
            continue
        for env in container(doc).get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref and not ref.get("optional"):
                assert ref["name"] in secrets, ref
                assert ref["key"] in secrets[ref["name"]]["data"]
    pg = one(docs, "StatefulSet", "regtune-postgres")
    svc = one(docs, "Service", "regtune-postgres")
    assert pg["spec"]["serviceName"] == svc["metadata"]["name"]
    assert pg["spec"]["volumeClaimTemplates"]
    with_url = [s for s in secrets.values() if "database-url" in s["data"]]
    assert len(with_url) == 1
    decoded = base64.b64decode(with_url[0]["data"]["database-url"]).decode()
    assert decoded.startswith("postgresql+psycopg://")
    assert "@regtune-postgres:5432/" in decoded


@pytest.mark.parametrize("overlay", ["overlays/gpu", "overlays/cpu", "overlays/gpu-autoscaled"])
def test_worker_torch_threads_match_the_cores_it_requests(
    rendered: dict[str, list[Doc]], overlay: str
) -> None:
    """Without it torch runs a thread per node core in every worker pod of the node."""
    c = container(one(rendered[overlay], "Deployment", "regtune-worker"))
    threads = [e["value"] for e in c["env"] if e["name"] == "REGTUNE_TORCH_THREADS"]
    assert threads == [c["resources"]["requests"]["cpu"]]


def _image_env() -> dict[str, str]:
    """The `ENV` values of the runtime image that name regtune settings (docker/Dockerfile)."""
    text = (ROOT / "docker" / "Dockerfile").read_text()
    return dict(re.findall(r"^\s*(REGTUNE_[A-Z_]+)=(\S+?)\s*\\?$", text, flags=re.M))


def _pod_env(doc: Doc, secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    """The container's environment as the kubelet builds it: the image's ENV, then each `env`
    entry; an optional secret key that is absent is skipped (the image's value stays)."""
    env = _image_env()
    for entry in container(doc).get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
            continue
        ref = entry["valueFrom"]["secretKeyRef"]
        data = secrets.get(ref["name"], {})
        if ref["key"] in data:
            env[entry["name"]] = base64.b64decode(data[ref["key"]]).decode()
        else:
            assert ref.get("optional"), ref  # a required key that is absent: the pod fails
    return env


@pytest.mark.parametrize("direct", [False, True])
def test_the_migration_job_upgrades_the_secrets_database(
    rendered: dict[str, list[Doc]], direct: bool
) -> None:
    """With only `database-url` (the quickstart, and what docs/deployment.md creates) the Job
    migrated the image's SQLite file: its optional key, absent, left the image's
    REGTUNE_DATABASE_URL in place. It must name the Secret's database, or the direct URL."""
    docs = rendered["overlays/quickstart"]
    secrets = {d["metadata"]["name"]: dict(d["data"]) for d in docs if d["kind"] == "Secret"}
    (name,) = [n for n, data in secrets.items() if "database-url" in data]
    if direct:
        secrets[name]["database-url-direct"] = base64.b64encode(b"postgresql://direct/db").decode()
    job = one(docs, "Job", "regtune-migrate")
    env = _pod_env(job, secrets)
    script = container(job)["command"][-1].replace("exec ", "echo ", 1)
    shown = subprocess.run(
        ["sh", "-c", script], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    url = base64.b64decode(secrets[name]["database-url"]).decode()
    assert shown[-1] == ("postgresql://direct/db" if direct else url)
    assert _image_env()["REGTUNE_DATABASE_URL"].startswith("sqlite")  # what it must replace


def test_keda_scales_the_workers_on_an_exported_metric(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["overlays/gpu-autoscaled"]
    scaled = one(docs, "ScaledObject", "regtune-worker")
    one(docs, "Deployment", scaled["spec"]["scaleTargetRef"]["name"])
    query = scaled["spec"]["triggers"][0]["metadata"]["query"]
    assert "regtune_studies" in query
    # the metric and its label values are what the API's /metrics exports
    from service.models import StudyStatus
    from service.observability import metrics

    assert '"regtune_studies"' in Path(metrics.__file__).read_text()
    assert {"queued", "running"} <= {s.value for s in StudyStatus}


def test_tune_job_runs_regtune_tune_against_the_api(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["examples/tune-job"]
    job = one(docs, "Job", "regtune-tune")
    script = " ".join(container(job)["command"])
    assert "regtune tune /spec/study.yaml --server http://regtune-api:8000" in script
    assert job["spec"]["backoffLimit"] == 0
    # the API answers the Host name the Job uses (others get 400 invalid_host)
    api = one(kustomize(K8S / "overlays" / "gpu"), "Deployment", "regtune-api")
    env = {e["name"]: e.get("value") for e in container(api)["env"]}
    assert "regtune-api" in env["REGTUNE_ALLOWED_HOSTS"].split(",")
    cm = one(docs, "ConfigMap", "regtune-tune-spec")
    assert pod_spec(job)["volumes"][0]["configMap"]["name"] == cm["metadata"]["name"]
    from service.spec import StudySpec

    StudySpec.model_validate(yaml.safe_load(cm["data"]["study.yaml"]))
