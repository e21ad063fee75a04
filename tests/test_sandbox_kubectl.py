"""Real kubectl against `python -m sandbox serve`, as the seed tutorial's scripts use it.

Covers discovery (kubectl finds deployments, `vs`, `virtualservice`), server-printed
tables (`kubectl get deployments`), `kubectl apply --server-side` of a Deployment
and a VirtualService, client-side `kubectl apply` (and its strict field validation),
`kubectl rollout status` and `rollout undo`, `kubectl delete deployment` (with and
without `--cascade=orphan`), and the seed's sanity check run verbatim through bash.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import Sandbox

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")

DEPLOYMENT = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "myapp-blue", "labels": {"app": "myapp", "color": "blue"}},
    "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "myapp", "color": "blue"}},
             "template": {"metadata": {"labels": {"app": "myapp", "color": "blue"}},
                          "spec": {"containers": [{"name": "myapp", "image": "myapp:v1.0",
                                                   "ports": [{"containerPort": 3000}]}]}}},
}
VIRTUAL_SERVICE = {
    "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
    "metadata": {"name": "myapp-blue-green"},
    "spec": {"hosts": ["*"], "gateways": ["myapp-gateway"], "http": [
        {"match": [{"headers": {"cookie": {"regex": "^(.*?;)?(test=true)(;.*)?$"}}}],
         "route": [{"destination": {"host": "myapp", "subset": "green"}}]},
        {"route": [{"destination": {"host": "myapp", "subset": "blue"}}]}]},
}
SANITY_CHECK = ("kubectl get virtualservice myapp-blue-green -o json "
                "| jq -r '.spec.http[-1].route[0].destination.subset'")


def kubectl(sandbox: Sandbox, home: Path, *args: str, check: bool = True
            ) -> subprocess.CompletedProcess[str]:
    env = {**sandbox.env(), "HOME": str(home)}
    done = subprocess.run(["kubectl", *args], env=env, capture_output=True, text=True,
                          timeout=60)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def manifest(tmp_path: Path, name: str, *docs: dict[str, object]) -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump_all(docs))
    return str(path)


def test_apply_server_side_then_get_and_the_seed_sanity_check(sandbox: Sandbox,
                                                              tmp_path: Path) -> None:
    files = manifest(tmp_path, "app.yml", DEPLOYMENT, VIRTUAL_SERVICE)
    applied = kubectl(sandbox, tmp_path, "apply", "--server-side", "-f", files)
    assert applied.stdout.splitlines() == [
        "deployment.apps/myapp-blue serverside-applied",
        "virtualservice.networking.istio.io/myapp-blue-green serverside-applied"]

    table = kubectl(sandbox, tmp_path, "get", "deployments").stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert table[1].split()[0] == "myapp-blue"
    assert kubectl(sandbox, tmp_path, "get", "vs", "-o", "name").stdout.strip() == (
        "virtualservice.networking.istio.io/myapp-blue-green")

    check = subprocess.run(["bash", "-c", SANITY_CHECK], capture_output=True, text=True,
                           env={**sandbox.env(), "HOME": str(tmp_path)}, timeout=60)
    assert (check.returncode, check.stdout) == (0, "blue\n"), check.stderr


def test_server_side_apply_reports_conflicts_and_updates(sandbox: Sandbox,
                                                         tmp_path: Path) -> None:
    files = manifest(tmp_path, "deploy.yml", DEPLOYMENT)
    kubectl(sandbox, tmp_path, "apply", "--server-side", "-f", files)
    kubectl(sandbox, tmp_path, "scale", "deployment/myapp-blue", "--replicas=2")
    conflict = kubectl(sandbox, tmp_path, "apply", "--server-side", "-f", files, check=False)
    assert conflict.returncode != 0
    assert "Apply failed with 1 conflict" in conflict.stderr and ".spec.replicas" in conflict.stderr
    kubectl(sandbox, tmp_path, "apply", "--server-side", "--force-conflicts", "-f", files)
    replicas = kubectl(sandbox, tmp_path, "get", "deployment", "myapp-blue",
                       "-o", "jsonpath={.spec.replicas}").stdout
    assert replicas == "1"


def test_client_side_apply_and_rollout_status(sandbox: Sandbox, tmp_path: Path) -> None:
    files = manifest(tmp_path, "deploy.yml", DEPLOYMENT)
    assert "created" in kubectl(sandbox, tmp_path, "apply", "-f", files).stdout
    kubectl(sandbox, tmp_path, "rollout", "status", "-f", files, "--timeout=30s")
    changed = {**DEPLOYMENT, "metadata": {**DEPLOYMENT["metadata"],  # type: ignore[dict-item]
                                          "annotations": {"release": "r2"}}}
    files = manifest(tmp_path, "deploy.yml", changed)
    assert "configured" in kubectl(sandbox, tmp_path, "apply", "-f", files).stdout
    annotation = kubectl(sandbox, tmp_path, "get", "deployment", "myapp-blue", "-o",
                         "jsonpath={.metadata.annotations.release}").stdout
    assert annotation == "r2"


def test_unknown_fields_are_refused_as_kubectl_validates_by_default(
        sandbox: Sandbox, tmp_path: Path) -> None:
    typo = {**DEPLOYMENT, "spec": {**DEPLOYMENT["spec"], "replica": 2}}  # type: ignore[dict-item]
    files = manifest(tmp_path, "deploy.yml", typo)
    refused = kubectl(sandbox, tmp_path, "apply", "-f", files, check=False)
    assert refused.returncode == 1
    assert ('Deployment in version "v1" cannot be handled as a Deployment: strict decoding '
            'error: unknown field "spec.replica"') in refused.stderr
    warned = kubectl(sandbox, tmp_path, "apply", "--validate=warn", "-f", files)
    assert 'Warning: unknown field "spec.replica"' in warned.stderr
    assert "created" in warned.stdout


def test_delete_deployment(sandbox: Sandbox, tmp_path: Path) -> None:
    kubectl(sandbox, tmp_path, "apply", "--server-side", "-f",
            manifest(tmp_path, "deploy.yml", DEPLOYMENT))
    deleted = kubectl(sandbox, tmp_path, "delete", "deployment", "myapp-blue")
    assert deleted.stdout.strip() == 'deployment.apps "myapp-blue" deleted'
    gone = kubectl(sandbox, tmp_path, "get", "deployment", "myapp-blue", check=False)
    assert gone.returncode == 1
    assert 'deployments.apps "myapp-blue" not found' in gone.stderr
    assert "No resources found" in kubectl(sandbox, tmp_path, "get", "replicasets").stderr


def test_delete_with_cascade_orphan_leaves_the_replicaset_and_pods(sandbox: Sandbox,
                                                                   tmp_path: Path) -> None:
    files = manifest(tmp_path, "deploy.yml", DEPLOYMENT)
    kubectl(sandbox, tmp_path, "apply", "--server-side", "-f", files)
    kubectl(sandbox, tmp_path, "rollout", "status", "-f", files, "--timeout=30s")
    pods = kubectl(sandbox, tmp_path, "get", "pods", "-o", "name").stdout.split()
    kubectl(sandbox, tmp_path, "delete", "deployment", "myapp-blue", "--cascade=orphan")
    assert kubectl(sandbox, tmp_path, "get", "deployments", check=False).stderr.startswith(
        "No resources found")
    owners = kubectl(sandbox, tmp_path, "get", "replicasets", "-o",
                     "jsonpath={.items[*].metadata.ownerReferences}").stdout
    assert owners == "", "the ReplicaSet is an orphan now"
    assert kubectl(sandbox, tmp_path, "get", "pods", "-o", "name").stdout.split() == pods


def test_rollout_undo_goes_back_to_the_old_replicaset(sandbox: Sandbox, tmp_path: Path) -> None:
    files = manifest(tmp_path, "deploy.yml", DEPLOYMENT)
    kubectl(sandbox, tmp_path, "apply", "-f", files)
    kubectl(sandbox, tmp_path, "rollout", "status", "-f", files, "--timeout=30s")
    kubectl(sandbox, tmp_path, "annotate", "deployment/myapp-blue", "team=payments")
    kubectl(sandbox, tmp_path, "set", "image", "deployment/myapp-blue", "myapp=myapp:v2.0")
    kubectl(sandbox, tmp_path, "rollout", "status", "-f", files, "--timeout=30s",
            "--revision=2")
    pinned = kubectl(sandbox, tmp_path, "rollout", "status", "deployment/myapp-blue",
                     "--revision=1", check=False)
    assert "desired revision (1) is different from the running revision (2)" in pinned.stderr
    # kubectl sends the old ReplicaSet's template back, `creationTimestamp: null` and all:
    # it hashes to the old ReplicaSet only once nulls are read as unset fields.
    kubectl(sandbox, tmp_path, "rollout", "undo", "deployment/myapp-blue")
    kubectl(sandbox, tmp_path, "rollout", "status", "-f", files, "--timeout=30s")
    revisions = kubectl(sandbox, tmp_path, "get", "replicasets", "-o", "jsonpath={range "
                        ".items[*]}{.spec.template.spec.containers[0].image}="
                        "{.metadata.annotations.deployment\\.kubernetes\\.io/revision} "
                        "{end}").stdout.split()
    assert sorted(revisions) == ["myapp:v1.0=3", "myapp:v2.0=2"], "two ReplicaSets, v1 reused"
    notes = kubectl(sandbox, tmp_path, "get", "deployment", "myapp-blue", "-o",
                    "jsonpath={.metadata.annotations}").stdout
    assert '"deployment.kubernetes.io/revision":"3"' in notes
    history = kubectl(sandbox, tmp_path, "rollout", "history", "deployment/myapp-blue").stdout
    assert history.split()[-4:] == ["2", "<none>", "3", "<none>"]
    team = kubectl(sandbox, tmp_path, "get", "replicasets", "-o",
                   "jsonpath={.items[*].metadata.annotations.team}").stdout
    assert team == "payments payments", "copied to the new ReplicaSet of the moment, each time"
    assert '"team":"payments"' in notes, "undo copies the ReplicaSet's annotations back"
