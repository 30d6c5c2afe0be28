"""The KubeRay manifest (k8s/rayservice.yaml): its shape, and that it serves the same app as
configs/squad.yaml with the accelerator declared where the runners ask for it.

The manifest is generated (``python -m tools.k8s_manifest --write``) from configs/squad.yaml and
k8s/overlay.yaml; the committed file must be what they generate (layer 0).

No Kubernetes cluster, network or Ray cluster is needed. Three layers after that:

1. The RayService object against a focused JSON schema of the ``ray.io/v1`` RayService CRD
   fields it uses (written from KubeRay's API types, see ``RAYSERVICE_SCHEMA``), closed
   (``additionalProperties: false``) at every RayService-specific level, so a misspelt field,
   which the API server would silently prune, fails here.
2. Each pod template against Kubernetes' own PodTemplateSpec schema (the OpenAPI schema the CRD
   embeds for ``template``), through the ``kubernetes-validate`` package, strict mode; skipped
   where that package is not installed.
3. ``serveConfigV2`` against Ray Serve's own config schema (``ServeDeploySchema``, what the
   dashboard validates when KubeRay submits it), the app's ``args`` against ``AppConfig``,
   the deployments against the app's, the IPU ask against what the worker group declares, and
   the whole Serve config against configs/squad.yaml except an explicit list of differences.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from factories import REPO

MANIFEST = REPO / "k8s" / "rayservice.yaml"
SQUAD = REPO / "configs" / "squad.yaml"

ACCELERATOR = "IPU"  # the Ray custom resource an accelerator host declares
WORKER_GROUP = "ipu-hosts"
RUNNER, PACKER, INGRESS = "PlanExecutor", "Packer", "Ingress"

# Where the Serve config in the manifest may differ from configs/squad.yaml, and why. Paths are
# dotted; list items with a `name` are addressed as [name]. A path covers everything under it.
# The test fails on any other difference, and on an entry here that no longer differs.
ALLOWED_DIFFERENCES = {
    "http_options.host": "the RayService's serve Service reaches the Serve proxies on the pod IPs, so they must "
    "listen on 0.0.0.0 (squad.yaml keeps a local run on loopback)",
    "applications[squad].args.model_dir": "absolute: the folder is prepared in the container image at the same path on every pod "
    "(the runners on worker pods read it; build_app would prepare it on one pod only)",
    "applications[squad].args.device": "sim: runs on any Kubernetes cluster; on real IPU hosts a PopRT backend would replace it",
    "applications[squad].args.sim": "the simulated device's profile: the spec's IPU timing",
    "applications[squad].deployments[Packer].ray_actor_options": "num_cpus 1: a CPU ask keeps it on the head, since the IPU hosts declare no CPUs",
    "applications[squad].deployments[Ingress].ray_actor_options": "num_cpus 1: as the Packer, kept on the head",
    "applications[squad].deployments[PlanExecutor].ray_actor_options": "resources {IPU: 1} and num_cpus 0: runs only on pods that declare an IPU",
    "applications[squad].deployments[PlanExecutor].autoscaling_config.max_replicas": "one runner per IPU the worker group can hold (maxReplicas x IPUs per pod)",
}

# --- 1. The RayService CRD, focused -----------------------------------------------------------
#
# Written from KubeRay's ray.io/v1 API types and their generated reference:
#   https://github.com/ray-project/kuberay/blob/master/ray-operator/apis/ray/v1/rayservice_types.go
#   https://github.com/ray-project/kuberay/blob/master/ray-operator/apis/ray/v1/raycluster_types.go
#   https://github.com/ray-project/kuberay/blob/master/docs/reference/api.md
#   (the CRD itself: ray-operator/config/crd/bases/ray.io_rayservices.yaml)
# and for rayStartParams values (strings only; `resources` as a quoted JSON object string):
#   https://docs.ray.io/en/latest/cluster/kubernetes/user-guides/config.html
# Field lists are those of KubeRay v1.x; a field added by a newer KubeRay must be added here
# before the manifest may use it. Pod templates are left open here and checked by layer 2.

# Kubernetes resource.Quantity, as the CRD writes it (int-or-string with this pattern).
QUANTITY = {
    "anyOf": [
        {"type": "integer"},
        {
            "type": "string",
            "pattern": r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
            r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$",
        },
    ]
}
INT32 = {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}

POD_TEMPLATE = {
    "type": "object",
    "required": ["spec"],
    "properties": {
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "required": ["containers"],
            "properties": {
                "containers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["name", "image"],
                        "properties": {
                            "name": {"type": "string"},
                            "image": {"type": "string", "minLength": 1},
                            "resources": {
                                "type": "object",
                                "properties": {
                                    "limits": {"type": "object", "additionalProperties": QUANTITY},
                                    "requests": {
                                        "type": "object",
                                        "additionalProperties": QUANTITY,
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}

HEAD_GROUP = {
    "type": "object",
    "additionalProperties": False,
    # rayStartParams is required by the older v1 CRDs (optional from KubeRay 1.1 on).
    "required": ["rayStartParams", "template"],
    "properties": {
        "template": POD_TEMPLATE,
        "headService": {"type": "object"},
        "enableIngress": {"type": "boolean"},
        "rayStartParams": STRING_MAP,
        "serviceType": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
    },
}

WORKER_GROUP_SPEC = {
    "type": "object",
    "additionalProperties": False,
    # minReplicas / maxReplicas have no omitempty in the Go type (defaults 0 and maxInt32).
    "required": ["groupName", "minReplicas", "maxReplicas", "rayStartParams", "template"],
    "properties": {
        "suspend": {"type": "boolean"},
        "groupName": {"type": "string", "minLength": 1},
        "replicas": INT32,
        "minReplicas": INT32,
        "maxReplicas": INT32,
        "idleTimeoutSeconds": INT32,
        "rayStartParams": STRING_MAP,
        "template": POD_TEMPLATE,
        "scaleStrategy": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"workersToDelete": {"type": "array", "items": {"type": "string"}}},
        },
        "numOfHosts": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
    },
}

RAY_CLUSTER_SPEC = {
    "type": "object",
    "additionalProperties": False,
    "required": ["headGroupSpec"],
    "properties": {
        "suspend": {"type": "boolean"},
        "managedBy": {"enum": ["ray.io/kuberay-operator", "kueue.x-k8s.io/multikueue"]},
        "autoscalerOptions": {"type": "object"},
        "headServiceAnnotations": STRING_MAP,
        "enableInTreeAutoscaling": {"type": "boolean"},
        "gcsFaultToleranceOptions": {"type": "object"},
        "headGroupSpec": HEAD_GROUP,
        "rayVersion": {"type": "string"},
        "workerGroupSpecs": {"type": "array", "items": WORKER_GROUP_SPEC},
    },
}

RAYSERVICE_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "ray.io/v1"},
        "kind": {"const": "RayService"},
        # KubeRay names Services after it (<name>-serve-svc, <name>-head-svc): keep it a
        # DNS-1035 label with room for the suffixes.
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {
                    "type": "string",
                    "pattern": r"^[a-z]([-a-z0-9]*[a-z0-9])?$",
                    "maxLength": 40,
                }
            },
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            # Both optional in the CRD; a RayService serving this app needs both.
            "required": ["serveConfigV2", "rayClusterConfig"],
            "properties": {
                "serveConfigV2": {"type": "string", "minLength": 1},
                "rayClusterConfig": RAY_CLUSTER_SPEC,
                "serveService": {"type": "object"},
                "upgradeStrategy": {
                    "type": "object",
                    "properties": {"type": {"enum": ["NewCluster", "None"]}},
                },
                "excludeHeadPodFromServeSvc": {"type": "boolean"},
                "serviceUnhealthySecondThreshold": INT32,  # deprecated, still accepted
                "deploymentUnhealthySecondThreshold": INT32,
            },
        },
    },
}

VALIDATOR = jsonschema.Draft202012Validator(RAYSERVICE_SCHEMA)


def schema_errors(obj: dict) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in VALIDATOR.iter_errors(obj)
    ]


# --- helpers ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifest() -> dict:
    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d is not None]
    assert len(docs) == 1, "k8s/rayservice.yaml holds exactly one object"
    return docs[0]


@pytest.fixture(scope="module")
def serve_config(manifest) -> dict:
    return yaml.safe_load(manifest["spec"]["serveConfigV2"])


@pytest.fixture(scope="module")
def squad_config() -> dict:
    return yaml.safe_load(SQUAD.read_text())


def the_app(config: dict) -> dict:
    (app,) = config["applications"]
    return app


def deployments_of(config: dict) -> dict[str, dict]:
    return {d["name"]: d for d in the_app(config).get("deployments", [])}


def declared_resources(params: dict) -> dict[str, float]:
    """Custom resources a group declares in ``rayStartParams.resources``.

    KubeRay documents the value as a JSON object inside a double-quoted string, backslashes
    included (``'"{\\"IPU\\": 2}"'`` in YAML), and passes it to ``ray start --resources`` through
    a shell, which strips the outer quotes and the backslashes: that is exactly one JSON
    string-literal decode, then the object."""
    raw = params.get("resources")
    if raw is None:
        return {}
    assert raw.startswith('"') and raw.endswith('"'), (
        f"rayStartParams.resources must be a quoted JSON string, got {raw!r}"
    )
    decoded = json.loads(json.loads(raw))
    assert isinstance(decoded, dict) and all(
        isinstance(v, (int, float)) and v >= 0 for v in decoded.values()
    ), decoded
    forbidden = {"CPU", "GPU", "memory"} & decoded.keys()
    assert not forbidden, f"use num-cpus / num-gpus / memory, not resources, for {forbidden}"
    return decoded


def node_capacity(group: dict) -> dict[str, float]:
    """What a pod of ``group`` offers Ray's scheduler (CPU, GPU and custom resources)."""
    params = group["rayStartParams"]
    assert "num-cpus" in params, "state num-cpus explicitly: placement below relies on it"
    return {
        "CPU": float(params["num-cpus"]),
        "GPU": float(params.get("num-gpus", "0")),
        **declared_resources(params),
    }


def actor_ask(deployment: dict) -> dict[str, float]:
    opts = deployment.get("ray_actor_options", {})
    return {
        "CPU": float(opts.get("num_cpus", 0)),
        "GPU": float(opts.get("num_gpus", 0)),
        **{k: float(v) for k, v in opts.get("resources", {}).items()},
    }


def fits(ask: dict[str, float], capacity: dict[str, float]) -> bool:
    return all(v <= 0 or capacity.get(k, 0) >= v for k, v in ask.items())


def groups(manifest: dict) -> dict[str, dict]:
    cluster = manifest["spec"]["rayClusterConfig"]
    out = {"head": cluster["headGroupSpec"]}
    out.update({g["groupName"]: g for g in cluster.get("workerGroupSpecs", [])})
    return out


def flatten(node, prefix: str = "") -> dict[str, object]:
    """Leaves of a config by dotted path; list items with a ``name`` as ``[name]``."""
    if isinstance(node, dict):
        out: dict[str, object] = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out or {prefix: {}}
    if isinstance(node, list) and node and all(isinstance(i, dict) and "name" in i for i in node):
        out = {}
        for item in node:
            out.update(
                flatten({k: v for k, v in item.items() if k != "name"}, f"{prefix}[{item['name']}]")
            )
        return out
    return {prefix: node}


def covered(path: str, allowed: str) -> bool:
    return path == allowed or path.startswith(allowed + ".") or path.startswith(allowed + "[")


# --- 0. generated -----------------------------------------------------------------------------


def test_committed_manifest_is_what_squad_yaml_and_the_overlay_generate():
    from tools.k8s_manifest import COMMAND, check

    diff = check()
    assert not diff, f"k8s/rayservice.yaml is stale: run `{COMMAND}`\n" + "".join(diff[:60])


def test_overlay_notes_are_the_allowed_differences():
    from tools.k8s_manifest import OVERLAY, read_overlay

    assert set(read_overlay(OVERLAY)["serve_notes"]) == set(ALLOWED_DIFFERENCES)


def test_merge_keys_mappings_and_named_lists():
    from tools.k8s_manifest import merge

    base = {
        "a": {"x": 1, "y": [1, 2]},
        "apps": [{"name": "p", "k": 1, "o": {"n": 1}}, {"name": "q", "k": 2}],
    }
    patch = {
        "a": {"y": [3], "z": 0},
        "apps": [{"name": "q", "k": 5}, {"name": "r", "k": 6}],
        "b": None,
    }
    assert merge(base, patch) == {
        "a": {"x": 1, "y": [3], "z": 0},
        "apps": [
            {"name": "p", "k": 1, "o": {"n": 1}},
            {"name": "q", "k": 5},
            {"name": "r", "k": 6},
        ],
        "b": None,
    }
    assert base["apps"][1]["k"] == 2, "the base is not changed"


def test_every_overlay_serve_change_needs_a_note_and_every_note_a_change():
    from tools.k8s_manifest import serve_config

    squad = {"http_options": {"host": "127.0.0.1", "port": 8000}}
    with pytest.raises(ValueError, match="without a serve_notes entry"):
        serve_config(squad, {"serve": {"http_options": {"host": "0.0.0.0"}}})
    with pytest.raises(ValueError, match="does not change"):
        serve_config(
            squad,
            {
                "serve": {"http_options": {"host": "0.0.0.0"}},
                "serve_notes": {"http_options.host": "pods", "proxy_location": "x"},
            },
        )
    assert serve_config(
        squad,
        {"serve": {"http_options": {"host": "0.0.0.0"}}, "serve_notes": {"http_options": "pods"}},
    ) == {"http_options": {"host": "0.0.0.0", "port": 8000}}


# --- 1. shape ---------------------------------------------------------------------------------


def test_manifest_matches_the_rayservice_crd_fields(manifest):
    assert schema_errors(manifest) == []


@pytest.mark.parametrize(
    "breakage, why",
    [
        (
            lambda m: m["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["rayStartParams"].update(
                {"num-cpus": 0}
            ),
            "a rayStartParams value that is not a string",
        ),
        (
            lambda m: m["spec"]["rayClusterConfig"].update(
                {"workerGroupSpec": m["spec"]["rayClusterConfig"].pop("workerGroupSpecs")}
            ),
            "a misspelt field",
        ),
        (
            lambda m: m["spec"]["rayClusterConfig"]["workerGroupSpecs"][0].pop("groupName"),
            "a worker group without a name",
        ),
        (
            lambda m: m["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"][
                "containers"
            ][0]["resources"]["limits"].update({"memory": "8 GB"}),
            "a malformed quantity",
        ),
        (lambda m: m.update({"apiVersion": "ray.io/v1alpha1"}), "the removed v1alpha1 API"),
    ],
)
def test_schema_rejects_broken_manifests(manifest, breakage, why):
    broken = copy.deepcopy(manifest)
    breakage(broken)
    assert schema_errors(broken), f"the schema let through {why}"


def test_pod_templates_match_kubernetes_podtemplatespec(manifest):
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    for name, group in groups(manifest).items():
        pod_template = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": f"{name}-template"},
            "template": group["template"],
        }
        try:
            kv.validate(pod_template, "1.30", strict=True)
        except kv.ValidationError as err:  # pragma: no cover - the message is the point
            pytest.fail(f"{name} pod template: {'/'.join(map(str, err.path))}: {err.message}")


def test_groups_are_well_formed(manifest):
    cluster = manifest["spec"]["rayClusterConfig"]
    names = [g["groupName"] for g in cluster["workerGroupSpecs"]]
    assert len(names) == len(set(names)), names
    for g in cluster["workerGroupSpecs"]:
        assert g["minReplicas"] <= g.get("replicas", g["minReplicas"]) <= g["maxReplicas"], g
    images = {
        c["image"] for g in groups(manifest).values() for c in g["template"]["spec"]["containers"]
    }
    assert len(images) == 1, f"head and workers must run one image: {images}"


def test_ray_version_agrees_with_the_project_and_the_image_recipe(manifest):
    version = manifest["spec"]["rayClusterConfig"]["rayVersion"]
    pin = re.search(
        r'"ray\[[a-z,]*serve[a-z,]*\]>=([0-9.]+)"', (REPO / "pyproject.toml").read_text()
    )
    assert pin, "pyproject.toml pins ray[serve]>=X"
    as_tuple = lambda v: tuple(int(p) for p in v.split("."))  # noqa: E731
    assert as_tuple(version) >= as_tuple(pin.group(1)), (version, pin.group(1))
    assert f"rayproject/ray:{version}-" in MANIFEST.read_text(), (
        "the image recipe in the header must build on the same Ray version as rayVersion"
    )


def test_every_ray_node_gets_the_serve_environment(manifest):
    # docs/serving.md: RAY_SERVE_THROUGHPUT_OPTIMIZED must be set where `ray start` runs, on every node.
    for name, group in groups(manifest).items():
        for container in group["template"]["spec"]["containers"]:
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            assert env.get("RAY_SERVE_THROUGHPUT_OPTIMIZED") == "1", (name, container["name"])


# --- 3. the Serve config ----------------------------------------------------------------------


def unknown_serve_keys(data, model, path: str = "") -> list[str]:
    """Keys of ``data`` that no field of the pydantic ``model`` (Ray Serve's config schema)
    names, recursively through nested models. Ray's schema ignores unknown keys, so a
    misspelt option (``autoscaling_confg``) would otherwise be dropped without a word."""
    import typing

    from pydantic import BaseModel

    def models_in(annotation) -> list[type]:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return [annotation]
        return [m for arg in typing.get_args(annotation) for m in models_in(arg)]

    fields = {f.alias or name: f for name, f in model.model_fields.items()}
    fields.update(model.model_fields)
    out = []
    for key, value in data.items():
        where = f"{path}.{key}" if path else key
        if key not in fields:
            out.append(where)
            continue
        for sub in models_in(fields[key].annotation)[:1]:
            items = value if isinstance(value, list) else [value]
            for i, item in enumerate(items):
                if isinstance(item, dict):
                    label = item.get("name", i) if isinstance(value, list) else None
                    out += unknown_serve_keys(
                        item, sub, where if label is None else f"{where}[{label}]"
                    )
    return out


def test_serve_config_passes_ray_serves_own_schema(serve_config):
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(serve_config)
    assert unknown_serve_keys(serve_config, ServeDeploySchema) == []


def test_unknown_serve_keys_are_found(serve_config):
    from ray.serve.schema import ServeDeploySchema

    broken = copy.deepcopy(serve_config)
    runner = next(d for d in the_app(broken)["deployments"] if d["name"] == RUNNER)
    runner["autoscaling_confg"] = runner.pop("autoscaling_config")
    runner["ray_actor_options"]["resource"] = runner["ray_actor_options"].pop("resources")
    broken["http_option"] = broken.pop("http_options")
    assert sorted(unknown_serve_keys(broken, ServeDeploySchema)) == [
        "applications[squad].deployments[PlanExecutor].autoscaling_confg",
        "applications[squad].deployments[PlanExecutor].ray_actor_options.resource",
        "http_option",
    ]


def test_app_args_validate_as_appconfig(serve_config):
    from deployments.config import AppConfig, PackingKnobs

    app = the_app(serve_config)
    assert app["import_path"] == "deployments.app:build_app"
    cfg = AppConfig(**app["args"])
    assert cfg.device == "sim"
    assert Path(app["args"]["model_dir"]).is_absolute(), (
        "pods do not start in the repository: model_dir must be the image's absolute path"
    )
    PackingKnobs(**deployments_of(serve_config)[PACKER]["user_config"])


def test_deployment_names_exist_in_the_app(serve_config):
    from deployments.ingress import Ingress
    from deployments.packer import Packer
    from deployments.runner import PlanExecutorDeployment

    app_names = {Ingress.name, Packer.name, PlanExecutorDeployment.name}
    assert app_names == {INGRESS, PACKER, RUNNER}
    assert set(deployments_of(serve_config)) <= app_names


def test_serve_port_is_the_head_containers_serve_port(manifest, serve_config):
    (head,) = manifest["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"][
        "containers"
    ]
    ports = {p["name"]: p["containerPort"] for p in head.get("ports", [])}
    assert ports.get("serve") == serve_config["http_options"]["port"], ports


def test_worker_group_declares_the_accelerator_and_the_head_does_not(manifest):
    by_name = groups(manifest)
    assert WORKER_GROUP in by_name, f"no worker group {WORKER_GROUP!r}"
    worker = declared_resources(by_name[WORKER_GROUP]["rayStartParams"])
    assert worker.get(ACCELERATOR, 0) >= 1, worker
    head = by_name["head"]["rayStartParams"]
    assert ACCELERATOR not in declared_resources(head), head
    assert float(head.get("num-gpus", "0")) == 0, head


def test_runner_asks_for_what_the_worker_group_declares(manifest, serve_config):
    runner = deployments_of(serve_config)[RUNNER]
    ask = runner["ray_actor_options"]["resources"]
    assert ask.get(ACCELERATOR, 0) > 0, f"PlanExecutor must ask for {ACCELERATOR}: {ask}"
    group = groups(manifest)[WORKER_GROUP]
    per_pod = declared_resources(group["rayStartParams"])[ACCELERATOR]
    assert ask[ACCELERATOR] <= per_pod, "one runner must fit on one pod"
    most = runner.get("autoscaling_config", {}).get("max_replicas", runner.get("num_replicas", 1))
    assert most * ask[ACCELERATOR] <= group["maxReplicas"] * per_pod, (
        "more runners than the worker group's IPUs: the extra replicas would never start"
    )
    others = {
        n
        for n, d in deployments_of(serve_config).items()
        if n != RUNNER and ACCELERATOR in d.get("ray_actor_options", {}).get("resources", {})
    }
    assert not others, f"only the runners use the accelerator: {others}"


def test_each_deployment_can_be_placed_only_where_intended(manifest, serve_config):
    capacity = {name: node_capacity(g) for name, g in groups(manifest).items()}
    intended = {INGRESS: {"head"}, PACKER: {"head"}, RUNNER: {WORKER_GROUP}}
    for name, deployment in deployments_of(serve_config).items():
        where = {g for g, cap in capacity.items() if fits(actor_ask(deployment), cap)}
        assert where == intended[name], f"{name} fits on {where}, meant for {intended[name]}"
    on_head = [d for n, d in deployments_of(serve_config).items() if intended[n] == {"head"}]
    cpus = sum(actor_ask(d)["CPU"] * d.get("num_replicas", 1) for d in on_head)
    assert cpus <= capacity["head"]["CPU"], f"head deployments ask {cpus} CPUs"


def test_serve_config_differs_from_squad_yaml_only_where_allowed(serve_config, squad_config):
    ours, theirs = flatten(serve_config), flatten(squad_config)
    differing = {
        p
        for p in ours.keys() | theirs.keys()
        if ours.get(p, "<absent>") != theirs.get(p, "<absent>")
    }
    unexplained = sorted(
        p for p in differing if not any(covered(p, a) for a in ALLOWED_DIFFERENCES)
    )
    assert not unexplained, (
        "k8s/rayservice.yaml and configs/squad.yaml differ at "
        + ", ".join(
            f"{p}: {ours.get(p, '<absent>')!r} vs {theirs.get(p, '<absent>')!r}"
            for p in unexplained
        )
        + " - change both, or add the path to ALLOWED_DIFFERENCES with the reason"
    )
    stale = sorted(a for a in ALLOWED_DIFFERENCES if not any(covered(p, a) for p in differing))
    assert not stale, f"ALLOWED_DIFFERENCES entries that no longer differ: {stale}"


# --- the API key and the dashboard ------------------------------------------------------------


def test_every_ray_node_gets_the_api_keys_from_a_secret(manifest):
    # Serve may build the app (and check its key) on any node: every Ray container needs it,
    # from a Secret, never written into the manifest.
    from deployments.auth import ENV_VAR

    for name, group in groups(manifest).items():
        for container in group["template"]["spec"]["containers"]:
            env = {e["name"]: e for e in container.get("env", [])}
            assert ENV_VAR in env, (name, container["name"])
            assert "value" not in env[ENV_VAR], "the keys must not be written in the manifest"
            ref = env[ENV_VAR]["valueFrom"]["secretKeyRef"]
            assert ref["name"] and ref["key"] and not ref.get("optional", False), ref
            header = [line for line in MANIFEST.read_text().splitlines() if line.startswith("#")]
            assert any(f"create secret generic {ref['name']}" in line for line in header), (
                "the header must say how to create the Secret"
            )


def test_public_serve_config_starts_only_with_a_key(serve_config):
    from deployments.auth import ENV_VAR, ExposureRefused, startup_keys
    from deployments.config import AppConfig

    host = serve_config["http_options"]["host"]
    cfg = AppConfig(**the_app(serve_config)["args"])
    assert cfg.api_keys is None and not cfg.allow_unauthenticated_public, (
        "keys come from the Secret, and the public app must not opt out of them"
    )
    keys = startup_keys(
        cfg.api_keys,
        cfg.allow_unauthenticated_public,
        environ={ENV_VAR: "k" * 32},
        host_of=lambda: host,
    )
    assert keys is not None and keys.matches("k" * 32)
    with pytest.raises(ExposureRefused, match="0.0.0.0"):
        startup_keys(
            cfg.api_keys, cfg.allow_unauthenticated_public, environ={}, host_of=lambda: host
        )


def test_dashboard_stays_inside_the_cluster(manifest):
    # KubeRay's operator reaches the dashboard through the head Service, so it listens on the
    # pod's address; that Service must stay ClusterIP and nothing may publish it.
    cluster = manifest["spec"]["rayClusterConfig"]
    head = cluster["headGroupSpec"]
    assert head.get("serviceType") == "ClusterIP", head.get("serviceType")
    assert not head.get("enableIngress", False)
    assert (
        "headService" not in head
        or head["headService"].get("spec", {}).get("type", "ClusterIP") == "ClusterIP"
    )
    serve_svc = manifest["spec"].get("serveService", {})
    ports = serve_svc.get("spec", {}).get("ports", [])
    assert all(p.get("port") != 8265 and p.get("name") != "dashboard" for p in ports), ports
