"""`kubectl exec` against the sandbox through the official client's `kubernetes.stream`.

Covers stdout/stderr on their channels, exit codes 0 and non-zero read from the
status channel (`resp.returncode`), a missing command (127), the pod's environment
and working directory, stdin closed through the v5 protocol, the refusals before
any upgrade (pod not running, no such pod), commands killed when the client leaves
or the sandbox stops, and the exact Status documents.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from conftest import stop_sandbox
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.stream import stream
from sandbox_objects import deployment, pid_exists, wait_for

from sandbox.execws import status_json


@pytest.fixture
def core(sandbox: Any) -> Iterator[client.CoreV1Api]:
    """A CoreV1Api on a sandbox running one ready pod of `myapp-blue` (image tag v1.0)."""
    api_client = config.new_client_from_config(sandbox.kubeconfig)
    env = [{"name": "DB_HOST", "value": "db.internal"}]
    client.AppsV1Api(api_client).create_namespaced_deployment(
        "default", deployment(image="registry/acme/myapp:v1.0", env=env))
    core = client.CoreV1Api(api_client)
    wait_for(lambda: any(c.ready for p in core.list_namespaced_pod("default").items
                         for c in p.status.container_statuses or []), what="a ready pod")
    yield core
    api_client.close()


def pod_name(core: client.CoreV1Api) -> str:
    name: str = core.list_namespaced_pod("default").items[0].metadata.name
    return name


def run(core: client.CoreV1Api, command: list[str], pod: str | None = None) -> Any:
    resp = stream(core.connect_get_namespaced_pod_exec, pod or pod_name(core), "default",
                  command=command, stderr=True, stdin=False, stdout=True, tty=False,
                  _preload_content=False)
    resp.run_forever(timeout=20)
    return resp


def test_exec_returns_output_and_exit_codes(core: client.CoreV1Api) -> None:
    ok = run(core, ["echo", "hello", "world"])
    assert (ok.read_stdout(), ok.read_stderr(), ok.returncode) == ("hello world\n", "", 0)
    failed = run(core, ["sh", "-c", "echo partial; echo broken >&2; exit 3"])
    assert (failed.read_stdout(), failed.read_stderr(), failed.returncode) == (
        "partial\n", "broken\n", 3)
    missing = run(core, ["no-such-command-here"])
    assert missing.returncode == 127
    assert "executable file not found" in missing.read_stderr()


def test_exec_runs_in_the_pods_environment_and_directory(core: client.CoreV1Api) -> None:
    name = pod_name(core)
    resp = run(core, ["sh", "-c", 'echo "$DB_HOST $SANDBOX_VERSION $SANDBOX_POD $PORT"; pwd'])
    variables, cwd = resp.read_stdout().splitlines()
    pod = core.read_namespaced_pod(name, "default")
    port = pod.metadata.annotations["sandbox.bluegreen.dev/port"]
    assert variables == f"db.internal v1.0 {name} {port}"
    assert cwd == pod.metadata.annotations["sandbox.bluegreen.dev/dir"]
    assert resp.returncode == 0


def test_exec_preloaded_and_with_stdin(core: client.CoreV1Api) -> None:
    name = pod_name(core)
    out = stream(core.connect_get_namespaced_pod_exec, name, "default", command=["echo", "hi"],
                 stderr=True, stdin=False, stdout=True, tty=False)
    assert out == "hi\n"
    resp = stream(core.connect_get_namespaced_pod_exec, name, "default", command=["cat"],
                  stderr=True, stdin=True, stdout=True, tty=False, _preload_content=False)
    assert resp.subprotocol == "v5.channel.k8s.io"
    resp.write_stdin("line through stdin\n")
    resp.close_channel(0)
    resp.run_forever(timeout=10)
    assert (resp.read_stdout(), resp.returncode) == ("line through stdin\n", 0)


def test_exec_is_refused_before_upgrade_when_the_pod_does_not_run(
        core: client.CoreV1Api) -> None:
    core.create_namespaced_pod("default", {
        "metadata": {"name": "done"},
        "spec": {"restartPolicy": "Never",
                 "containers": [{"name": "c", "image": "registry/acme/myapp:v1-crash"}]}})
    wait_for(lambda: core.read_namespaced_pod("done", "default").status.phase == "Failed",
             what="the pod to fail")
    with pytest.raises(ApiException) as refused:
        run(core, ["echo", "hi"], pod="done")
    assert "400" in str(refused.value)
    with pytest.raises(ApiException) as missing:
        run(core, ["echo", "hi"], pod="nope")
    assert "404" in str(missing.value)


def start_sleeper(core: client.CoreV1Api) -> tuple[Any, int]:
    """An exec'd `sleep` still running, and its pid."""
    resp = stream(core.connect_get_namespaced_pod_exec, pod_name(core), "default",
                  command=["sh", "-c", "echo $$; exec sleep 30"], stderr=True, stdin=False,
                  stdout=True, tty=False, _preload_content=False)
    return resp, int(resp.readline_stdout(timeout=10))


def test_an_exec_command_does_not_outlive_its_client_or_the_sandbox(
        sandbox: Any, core: client.CoreV1Api) -> None:
    resp, pid = start_sleeper(core)
    assert pid_exists(pid)
    resp.close()
    wait_for(lambda: not pid_exists(pid), what="the command killed with its client")
    resp, pid = start_sleeper(core)
    stop_sandbox(sandbox)
    assert not pid_exists(pid)


def test_status_documents_are_the_kubelets() -> None:
    assert status_json(0, ["true"]) == {"metadata": {}, "status": "Success"}
    assert status_json(2, ["sh", "-c", "exit 2"]) == {
        "metadata": {}, "status": "Failure",
        "message": "command terminated with non-zero exit code: error executing command "
                   "[sh -c exit 2], exit code 2",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": "2"}]}}
