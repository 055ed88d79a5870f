"""The Kubernetes examples in deploy/: valid against the Kubernetes schemas (offline, with the schemas
kubernetes-validate ships), safe by default, and consistent with gitsync's own CLI and settings, so a
renamed flag, setting or port breaks this test rather than somebody's deployment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gitsync.cli import build_parser
from gitsync.config import load_settings
from gitsync.http_thread import split_listen

kubernetes_validate = pytest.importorskip("kubernetes_validate")

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.30.0"
#: Custom resources whose schema kubernetes-validate cannot ship; checked by hand below.
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}


def resources() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                found.append((path.name, doc))
    return found


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in resources() if doc["kind"] == kind]


def pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in of_kind("Deployment"):
        yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]
    for doc in of_kind("CronJob"):
        yield doc["metadata"]["name"], doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def gitsync_containers() -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for name, spec in pod_specs():
        for container in spec["containers"]:
            if container["image"].startswith("farm-gitsync"):
                yield name, spec, container


def test_every_manifest_validates_against_the_kubernetes_schemas() -> None:
    docs = resources()
    assert {d["kind"] for _, d in docs} >= {"Deployment", "CronJob", "Service", "ServiceMonitor", "Secret",
                                            "PersistentVolumeClaim"}
    for filename, doc in docs:
        if (doc["apiVersion"], doc["kind"]) in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{filename}: {doc['kind']}/{doc['metadata']['name']}: {path}: {exc.message}")


def test_a_typo_in_a_manifest_is_caught() -> None:
    """The validator really checks: an unknown field in a container is refused in strict mode."""
    deployment = of_kind("Deployment")[0]
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_deployments_with_a_state_volume_are_recreated_not_rolled() -> None:
    for deployment in of_kind("Deployment"):
        claims = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if "persistentVolumeClaim" in v]
        if claims:
            assert deployment["spec"]["strategy"]["type"] == "Recreate", deployment["metadata"]["name"]
            assert deployment["spec"]["replicas"] == 1


def test_every_container_is_locked_down_and_sized() -> None:
    for name, spec in pod_specs():
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] != 0, name
        assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec.get("automountServiceAccountToken") is False, name
        for container in spec["containers"]:
            sc = container["securityContext"]
            where = f"{name}/{container['name']}"
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert container["resources"]["requests"]["memory"], where
            assert container["resources"]["limits"]["memory"], where


def test_gitsync_never_gates_the_jobs_service_readiness() -> None:
    """A broken commit (or a restart while the head is broken) must not take Farm's API out of its Service."""
    sidecars = [c for name, _, c in gitsync_containers() if name == "farm-jobs"]
    assert sidecars, "the sidecar example has a gitsync container"
    for container in sidecars:
        assert "readinessProbe" not in container and "startupProbe" not in container
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_commands_settings_ports_and_paths_agree_with_the_cli() -> None:
    parser = build_parser()
    for name, spec, container in gitsync_containers():
        args = parser.parse_args(container["args"])  # exits (SystemExit) on an unknown command or flag
        env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
        gitsync_env = {k: v for k, v in env.items() if k.startswith("GITSYNC_")}
        unknown = set(gitsync_env) - {o for o in _option_envs()}
        assert not unknown, f"{name}: no such setting: {unknown}"
        settings = load_settings(None, environ=gitsync_env)  # types and choices checked like at start-up
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}

        where = (name, spec, container)
        _check_mounted(*where, settings.target_directory, writable=True)
        _check_mounted(*where, str(settings.state_path), writable=True)
        assert "persistentVolumeClaim" in volumes[mounts[str(settings.state_path)]["name"]]
        for credential in (settings.repo_token_file, settings.repo_ssh_key_file, settings.repo_known_hosts_file,
                           settings.server_webhook_secret_file, settings.push_forge_token_file):
            if credential:
                _check_mounted(*where, credential, secret=True)
        assert not any(k.endswith("_ENV") for k in gitsync_env), "credentials come from files"
        _check_mounted(*where, env["HOME"], writable=True)  # the root filesystem is read-only
        if args.command == "run":
            listen = args.listen or settings.server_listen
            _, port = split_listen(listen)
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            assert port in ports.values(), f"{name}: gitsync listens on {port}, the container declares {ports}"
            assert not listen.startswith("127."), "a probe or Service cannot reach a loopback address"
            probe_port = container["livenessProbe"]["httpGet"]["port"]
            assert ports.get(probe_port, probe_port) == port


def test_service_and_service_monitor_reach_the_gitsync_port() -> None:
    (deployment,) = [d for d in of_kind("Deployment") if d["metadata"]["name"] == "farm-jobs"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    port_names = {p["name"] for c in deployment["spec"]["template"]["spec"]["containers"]
                  for p in c.get("ports", []) if c["image"].startswith("farm-gitsync")}
    (service,) = [s for s in of_kind("Service") if s["metadata"]["name"] == "farm-gitsync"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    (monitor,) = of_kind("ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    service_ports = {p["name"] for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in service_ports and endpoint["path"] == "/metrics"


def test_every_referenced_claim_and_secret_is_defined() -> None:
    claims = {c["metadata"]["name"] for c in of_kind("PersistentVolumeClaim")}
    secrets = {s["metadata"]["name"] for s in of_kind("Secret")}
    for name, spec in pod_specs():
        for volume in spec["volumes"]:
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, name
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets, name
        for container in spec["containers"]:
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in _secret_keys(ref["name"]), f"{name}: {ref}"


def _check_mounted(name: str, spec: dict[str, Any], container: dict[str, Any], path: str, *,
                   secret: bool = False, writable: bool = False) -> None:
    """`path` lies on a volume the container mounts (writable if asked); a credential on a Secret holding it."""
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    mount = next((m for p, m in mounts.items() if path == p or path.startswith(p.rstrip("/") + "/")), None)
    assert mount is not None, f"{name}: {path} is on no volume"
    assert not (writable and mount.get("readOnly")), f"{name}: {path} must be writable"
    volume = volumes[mount["name"]]
    if secret:
        assert "secret" in volume, f"{name}: {path} is a credential and must come from a Secret"
        key = path[len(mount["mountPath"]):].strip("/")
        stored = _secret_keys(volume["secret"]["secretName"])
        assert key in stored, f"{name}: secret {volume['secret']['secretName']} has no key {key}"


def _option_envs() -> set[str]:
    from gitsync.config import OPTIONS

    return {o.env for o in OPTIONS}


def _secret_keys(name: str) -> set[str]:
    (secret,) = [s for s in of_kind("Secret") if s["metadata"]["name"] == name]
    return set(secret.get("stringData", {})) | set(secret.get("data", {}))
