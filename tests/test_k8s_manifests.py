"""Offline checks of the Kubernetes manifests under k8s/ and of the Dockerfile that builds their image.

- Every document of a custom resource is validated (draft 7) against the JSON Schema converted from its operator's
  CRD in ``../shared/k8s-schemas`` (see its README: strict objects catch typos, nulls and unquoted yes/no).
  Built-in kinds (ConfigMap, ...) only have to parse here.
- ``rayVersion`` == the ``ray[default]`` pin in pyproject.toml == the version in every Ray image tag == the
  Dockerfile's RAY_VERSION.
- Ray pods: requests == limits, whole CPUs (k8s/README.md); worker groups state min <= replicas <= max.
- The ConfigMap's config.yaml parses (and validates with pipeline.config when that imports), and the objects refer
  to each other by the right names (ConfigMap, cluster selector, Kafka bootstrap service, topics, metrics port).
- Negative tests prove that each check can fail.
"""

from __future__ import annotations

import copy
import json
import re
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
SCHEMAS = Path(__file__).resolve().parents[1].parent / "shared" / "k8s-schemas"
PYPROJECT = ROOT / "pyproject.toml"
DOCKERFILE = ROOT / "Dockerfile"

# API groups the API server serves itself: no CRD schema; kubectl/kubernetes-validate check them. Here they parse.
BUILTIN_GROUPS = frozenset(
    {
        "",
        "apps",
        "batch",
        "autoscaling",
        "policy",
        "networking.k8s.io",
        "rbac.authorization.k8s.io",
        "scheduling.k8s.io",
        "storage.k8s.io",
        "coordination.k8s.io",
    }
)
RAY_POD_KINDS = ("RayCluster", "RayJob", "RayService")

MANIFEST_FILES = sorted([*K8S.rglob("*.yaml"), *K8S.rglob("*.yml")])


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


@cache
def load_docs(path: Path) -> tuple[dict[str, Any], ...]:
    """The non-empty YAML documents of one file (PyYAML, YAML 1.1 like kubectl)."""
    with path.open() as f:
        return tuple(d for d in yaml.safe_load_all(f) if d is not None)


def all_docs() -> list[tuple[str, dict[str, Any]]]:
    return [(_rel(p), d) for p in MANIFEST_FILES for d in load_docs(p)]


def docs_of_kind(kind: str) -> list[dict[str, Any]]:
    return [d for _, d in all_docs() if d.get("kind") == kind]


def split_api_version(doc: dict[str, Any]) -> tuple[str, str]:
    group, _, version = str(doc["apiVersion"]).rpartition("/")
    return group, version


def schema_file(doc: dict[str, Any]) -> Path:
    group, version = split_api_version(doc)
    return SCHEMAS / group / f"{str(doc['kind']).lower()}_{version}.json"


@cache
def validator_for(path: Path) -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(json.loads(path.read_text()))


def schema_errors(doc: dict[str, Any]) -> list[str]:
    """Schema violations of one custom-resource document, one line each ('' path = the root)."""
    errors = sorted(validator_for(schema_file(doc)).iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message[:300]}" for e in errors]


def require_schemas() -> None:
    if not SCHEMAS.is_dir():
        pytest.skip(f"no CRD schemas at {SCHEMAS} (shared/k8s-schemas next to the repo); custom resources not checked")


# ---- Ray pod templates -------------------------------------------------------------------------------------------


def cluster_specs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The RayCluster specs inside a Ray custom resource (none for a RayJob with clusterSelector)."""
    spec = doc.get("spec") or {}
    kind = doc.get("kind")
    if kind == "RayCluster":
        return [spec]
    if kind == "RayJob" and "rayClusterSpec" in spec:
        return [spec["rayClusterSpec"]]
    if kind == "RayService" and "rayClusterConfig" in spec:
        return [spec["rayClusterConfig"]]
    return []


def ray_pod_specs(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(label, pod spec) of every Ray node pod template in a Ray custom resource."""
    name = doc.get("metadata", {}).get("name", "?")
    for spec in cluster_specs(doc):
        yield f"{name}/head", spec["headGroupSpec"]["template"]["spec"]
        for group in spec.get("workerGroupSpecs", []):
            yield f"{name}/{group.get('groupName', '?')}", group["template"]["spec"]


def ray_images(doc: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(label, image) of each Ray container: containers[0] of a Ray pod (KubeRay's convention) and the submitter."""
    for label, pod in ray_pod_specs(doc):
        yield label, pod["containers"][0]["image"]
    submitter = ((doc.get("spec") or {}).get("submitterPodTemplate") or {}).get("spec")
    if doc.get("kind") == "RayJob" and submitter:
        for c in submitter["containers"]:
            yield f"{doc['metadata']['name']}/submitter", c["image"]


def image_tag(image: str) -> str:
    image = image.split("@", 1)[0]
    last = image.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else ""


def version_in(version: str, text: str) -> bool:
    """Whether `version` occurs in `text` as a whole version (2.6.0 is not in 2.60.0 or 12.6.0)."""
    return re.search(rf"(?<![0-9.]){re.escape(version)}(?![0-9])", text) is not None


def version_problems(docs: list[dict[str, Any]], pin: str | None) -> list[str]:
    """rayVersion and Ray image tags that disagree with each other or with the pyproject pin."""
    problems: list[str] = []
    versions = {spec.get("rayVersion") for d in docs for spec in cluster_specs(d)}
    if not versions:
        return ["no rayVersion found in any Ray custom resource"]
    if len(versions) != 1:
        problems.append(f"rayVersion differs between manifests: {sorted(map(str, versions))}")
    expected = pin or next(iter(versions))
    for d in docs:
        for spec in cluster_specs(d):
            got = spec.get("rayVersion")
            if got != expected:
                problems.append(f"{d['metadata']['name']}: rayVersion {got!r}, expected {expected!r}")
        for label, image in ray_images(d):
            if not version_in(expected, image_tag(image)):
                problems.append(f"{label}: image {image!r} does not carry ray {expected} in its tag")
    return problems


def cpu_whole(q: Any) -> bool:
    s = str(q)
    if re.fullmatch(r"[1-9][0-9]*", s):
        return True
    m = re.fullmatch(r"([1-9][0-9]*)m", s)
    return m is not None and int(m[1]) % 1000 == 0


def resource_problems(docs: list[dict[str, Any]]) -> list[str]:
    """Containers of Ray pods without requests == limits or with fractional CPUs; bad worker-group sizes."""
    problems: list[str] = []
    for d in docs:
        for label, pod in ray_pod_specs(d):
            for c in pod.get("containers", []):
                where = f"{label}/{c.get('name', '?')}"
                res = c.get("resources") or {}
                req, lim = res.get("requests") or {}, res.get("limits") or {}
                if not {"cpu", "memory"} <= lim.keys():
                    problems.append(f"{where}: limits must set cpu and memory, got {sorted(lim)}")
                if {k: str(v) for k, v in req.items()} != {k: str(v) for k, v in lim.items()}:
                    problems.append(f"{where}: requests {req} != limits {lim}")
                for kind, q in (("requests", req.get("cpu")), ("limits", lim.get("cpu"))):
                    if q is not None and not cpu_whole(q):
                        problems.append(f"{where}: {kind}.cpu {q!r} is not a whole number of CPUs")
        for spec in cluster_specs(d):
            for g in spec.get("workerGroupSpecs", []):
                lo, n, hi = g.get("minReplicas"), g.get("replicas"), g.get("maxReplicas")
                if not all(isinstance(v, int) for v in (lo, n, hi)) or not lo <= n <= hi:
                    problems.append(
                        f"{d['metadata']['name']}/{g.get('groupName')}: need minReplicas <= replicas <= maxReplicas, "
                        f"all written out; got {lo}, {n}, {hi}"
                    )
    return problems


def pinned_ray_version() -> str:
    """The X of "ray[default]==X" in pyproject.toml's [project] dependencies (skips if there is no pyproject)."""
    if not PYPROJECT.is_file():
        pytest.skip(f"{_rel(PYPROJECT)} not there yet: rayVersion not compared with the ray pin")
    deps = tomllib.loads(PYPROJECT.read_text()).get("project", {}).get("dependencies", [])
    for dep in deps:
        m = re.fullmatch(r"ray\[[^\]]*\bdefault\b[^\]]*\]\s*==\s*([0-9][0-9A-Za-z.+-]*)", dep.replace(" ", ""))
        if m:
            return m[1]
    pytest.fail(f"{_rel(PYPROJECT)}: no exact 'ray[default]==X' pin in [project] dependencies: {deps}")


def dockerfile_ray_version() -> str:
    text = DOCKERFILE.read_text()
    m = re.search(r"^ARG RAY_VERSION=(\S+)\s*$", text, re.M)
    assert m, f"{_rel(DOCKERFILE)}: no 'ARG RAY_VERSION=X' line"
    base = re.search(r"^ARG BASE_IMAGE=(\S+)\s*$", text, re.M)
    assert base, f"{_rel(DOCKERFILE)}: no 'ARG BASE_IMAGE=...' line"
    assert "${RAY_VERSION}" in base[1] or version_in(m[1], base[1]), (
        f"{_rel(DOCKERFILE)}: BASE_IMAGE {base[1]!r} does not follow RAY_VERSION {m[1]}"
    )
    return m[1]


def the_config() -> dict[str, Any]:
    cms = [d for d in docs_of_kind("ConfigMap") if d["metadata"]["name"] == "maskwatch-config"]
    assert len(cms) == 1, f"expected one ConfigMap maskwatch-config, found {len(cms)}"
    text = cms[0].get("data", {}).get("config.yaml")
    assert isinstance(text, str), "ConfigMap maskwatch-config has no data.config.yaml string"
    cfg = yaml.safe_load(text)
    assert isinstance(cfg, dict), f"config.yaml must be a mapping, got {type(cfg).__name__}"
    return cfg


def ray_cluster() -> dict[str, Any]:
    clusters = docs_of_kind("RayCluster")
    assert len(clusters) == 1, f"expected one RayCluster under k8s/, found {len(clusters)}"
    return clusters[0]


# ---- tests -------------------------------------------------------------------------------------------------------


def test_manifests_present() -> None:
    kinds = sorted(str(d.get("kind")) for _, d in all_docs())
    for kind in ("RayCluster", "RayJob", "ConfigMap", "Kafka", "KafkaNodePool", "PodMonitor"):
        assert kind in kinds, f"no {kind} under k8s/ (found {kinds})"
    assert kinds.count("KafkaTopic") >= 2, f"expected the decisions and camera-stats KafkaTopics, found {kinds}"


@pytest.mark.parametrize("path", MANIFEST_FILES, ids=_rel)
def test_one_document_per_file(path: Path) -> None:
    docs = load_docs(path)
    # check-jsonschema reads one YAML document per file.
    assert len(docs) == 1, f"{_rel(path)}: {len(docs)} YAML documents, expected exactly one"
    doc = docs[0]
    assert isinstance(doc, dict), f"{_rel(path)}: top level is {type(doc).__name__}, expected a mapping"
    for key in ("apiVersion", "kind"):
        assert isinstance(doc.get(key), str), f"{_rel(path)}: missing {key}"
    assert isinstance((doc.get("metadata") or {}).get("name"), str), f"{_rel(path)}: missing metadata.name"


@pytest.mark.parametrize("path", MANIFEST_FILES, ids=_rel)
def test_custom_resources_match_crd_schema(path: Path) -> None:
    require_schemas()
    for doc in load_docs(path):
        group, version = split_api_version(doc)
        if group in BUILTIN_GROUPS:
            continue  # parsed above; no CRD schema for built-in kinds
        schema = schema_file(doc)
        assert schema.is_file(), (
            f"{_rel(path)}: no schema {schema.relative_to(SCHEMAS)} for {doc['apiVersion']} {doc['kind']}: "
            "a version the operator does not serve (Strimzi: kafka.strimzi.io/v1) or a new CRD to add to the schemas"
        )
        errors = schema_errors(doc)
        assert not errors, f"{_rel(path)} ({doc['kind']} {version}):\n  " + "\n  ".join(errors)


def test_strimzi_resources_use_v1() -> None:
    # Strimzi 1.x serves only v1; the v1beta2 schemas exist too, so the schema test alone would pass v1beta2.
    for path, doc in all_docs():
        group, version = split_api_version(doc)
        if group == "kafka.strimzi.io":
            assert version == "v1", f"{path}: {doc['apiVersion']}; write kafka.strimzi.io/v1"


def test_ray_versions_agree_with_image_tags_and_dockerfile() -> None:
    docs = [d for _, d in all_docs() if d.get("kind") in RAY_POD_KINDS]
    problems = version_problems(docs, None)
    assert not problems, "\n".join(problems)
    ray_version = ray_cluster()["spec"]["rayVersion"]
    assert dockerfile_ray_version() == ray_version, f"Dockerfile RAY_VERSION != rayVersion {ray_version}"


def test_ray_version_matches_pyproject_pin() -> None:
    pin = pinned_ray_version()
    docs = [d for _, d in all_docs() if d.get("kind") in RAY_POD_KINDS]
    problems = version_problems(docs, pin)
    assert not problems, f"ray pin in pyproject.toml is {pin}:\n" + "\n".join(problems)
    assert dockerfile_ray_version() == pin, f"Dockerfile RAY_VERSION != ray pin {pin}"


def test_ray_pods_requests_equal_limits() -> None:
    docs = [d for _, d in all_docs() if d.get("kind") in RAY_POD_KINDS]
    problems = resource_problems(docs)
    assert not problems, "\n".join(problems)


def test_ray_cluster_layout() -> None:
    spec = ray_cluster()["spec"]
    assert spec["headGroupSpec"]["rayStartParams"].get("num-cpus") == "0", 'head must have num-cpus: "0"'
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    # One group: node pipelines keep a camera's frames on the pod that decoded them (shards beside the models).
    assert set(groups) == {"gpu"}, f"worker groups {sorted(groups)}, expected gpu only"
    gpu_limits = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert str(gpu_limits.get("nvidia.com/gpu")) == "1", f"gpu group limits {gpu_limits}"
    assert spec.get("enableInTreeAutoscaling") is True, "the autoscaler adds gpu pods for cameras past capacity"
    assert groups["gpu"]["minReplicas"] < groups["gpu"]["maxReplicas"], "the autoscaler needs room to add pods"
    # Ray 2.60 turns token authentication on; KubeRay hands the token to every pod, the driver's included.
    assert spec.get("authOptions", {}).get("mode") == "token", "authOptions.mode must be token (Ray 2.60)"
    for label, pod in ray_pod_specs(ray_cluster()):
        ray_container = pod["containers"][0]
        mounts = {m["mountPath"]: m["name"] for m in ray_container.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        assert "/tmp/ray" in mounts, f"{label}: /tmp/ray not mounted"
        assert "emptyDir" in volumes[mounts["/tmp/ray"]], f"{label}: /tmp/ray must be an emptyDir"
        assert "/etc/maskwatch" in mounts, f"{label}: the config is not mounted at /etc/maskwatch"
        env = {e["name"]: e.get("value") for e in ray_container.get("env", [])}
        assert env.get("RAY_USAGE_STATS_ENABLED") == "0", f'{label}: RAY_USAGE_STATS_ENABLED must be "0"'
        assert "metrics" in {p.get("name") for p in ray_container.get("ports", [])}, f"{label}: no metrics port"


def test_a_node_pipeline_fits_one_gpu_pod_and_only_one() -> None:
    """The config's pipeline bundle (cluster.topology.pipeline_bundle) must fit a `gpu` pod, or no camera ever runs;
    and two must not, or one pod would hold two pipelines' cameras on its one GPU."""
    config = pytest.importorskip("pipeline.config", reason="pipeline.config (pydantic) does not import here")
    topology = pytest.importorskip("cluster.topology", reason="cluster.topology (Ray) does not import here")
    bundle = topology.pipeline_bundle(config.parse_config(the_config(), "k8s/configmap.yaml config.yaml"))
    (gpu,) = [g for g in ray_cluster()["spec"]["workerGroupSpecs"] if g["groupName"] == "gpu"]
    limits = gpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    pod = {"CPU": float(limits["cpu"]), "GPU": float(limits["nvidia.com/gpu"]),
           **{k: float(v) for k, v in gpu.get("resources", {}).items()}}
    assert all(pod.get(k, 0.0) >= v for k, v in bundle.items()), (bundle, pod)
    assert any(pod.get(k, 0.0) < 2 * v for k, v in bundle.items()), (bundle, pod)


def test_configmap_config_parses() -> None:
    cfg = the_config()
    assert isinstance(cfg.get("cameras"), list), "config.yaml: cameras must be a list"
    assert cfg["cameras"], "config.yaml: no cameras"
    assert isinstance(cfg.get("kafka"), dict), "config.yaml: kafka must be a mapping"
    assert cfg["kafka"].get("bootstrap_servers"), "config.yaml: kafka.bootstrap_servers is empty"


def test_configmap_config_validates_with_pydantic_model() -> None:
    config = pytest.importorskip("pipeline.config", reason="pipeline.config (pydantic) does not import here")
    parsed = config.parse_config(the_config(), "k8s/configmap.yaml config.yaml")
    assert parsed.cameras, "config.yaml: no cameras after validation"


def test_objects_refer_to_each_other() -> None:
    rc = ray_cluster()
    rc_name = rc["metadata"]["name"]
    cm_names = {d["metadata"]["name"] for d in docs_of_kind("ConfigMap")}
    for label, pod in ray_pod_specs(rc):
        for v in pod.get("volumes", []):
            if "configMap" in v:
                assert v["configMap"]["name"] in cm_names, f"{label}: volume {v['name']} names a missing ConfigMap"

    for job in docs_of_kind("RayJob"):
        selector = job["spec"].get("clusterSelector")
        if selector:
            assert selector == {"ray.io/cluster": rc_name}, f"RayJob selects {selector}, the RayCluster is {rc_name}"
            assert job["spec"].get("shutdownAfterJobFinishes") is False, (
                "KubeRay rejects shutdownAfterJobFinishes: true with clusterSelector"
            )
        assert "--config /etc/maskwatch/config.yaml" in job["spec"]["entrypoint"]

    (kafka,) = docs_of_kind("Kafka")
    kafka_name = kafka["metadata"]["name"]
    for kind in ("KafkaNodePool", "KafkaTopic"):
        for d in docs_of_kind(kind):
            got = d["metadata"].get("labels", {}).get("strimzi.io/cluster")
            assert got == kafka_name, f"{kind} {d['metadata']['name']}: strimzi.io/cluster {got!r} != {kafka_name!r}"

    cfg_kafka = the_config()["kafka"]
    plain = [lst for lst in kafka["spec"]["kafka"]["listeners"] if lst["type"] == "internal" and not lst["tls"]]
    bootstraps = {f"{kafka_name}-kafka-bootstrap:{lst['port']}" for lst in plain}
    assert cfg_kafka["bootstrap_servers"] in bootstraps, (
        f"config kafka.bootstrap_servers {cfg_kafka['bootstrap_servers']!r}, the Kafka offers {sorted(bootstraps)}"
    )
    for label, pod in ray_pod_specs(rc):
        for e in pod["containers"][0].get("env", []):
            if "KAFKA" in e["name"] and "BOOTSTRAP" in e["name"]:
                assert e.get("value") == cfg_kafka["bootstrap_servers"], f"{label}: {e['name']}={e.get('value')!r}"

    topics = {d["spec"].get("topicName", d["metadata"]["name"]): d for d in docs_of_kind("KafkaTopic")}
    for key in ("decisions_topic", "stats_topic", "district_stats_topic"):
        assert cfg_kafka.get(key) in topics, f"config kafka.{key} {cfg_kafka.get(key)!r} has no KafkaTopic"
    for key in ("stats_topic", "district_stats_topic"):
        assert topics[cfg_kafka[key]]["spec"]["config"]["cleanup.policy"] == "compact", key

    # The roll-up Deployment reads the same ConfigMap, at the path its command names, with one replica at a time.
    (rollup,) = [d for d in docs_of_kind("Deployment") if d["metadata"]["name"] == "maskwatch-rollup"]
    assert rollup["spec"]["replicas"] == 1
    assert rollup["spec"]["strategy"]["type"] == "Recreate"
    pod = rollup["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    cmd = container["command"]
    assert cmd[:2] == ["maskwatch", "rollup"]
    config_dir = str(Path(cmd[cmd.index("--config") + 1]).parent)
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts[config_dir]]["configMap"]["name"] in cm_names
    assert str(Path(cmd[cmd.index("--outbox") + 1]).parent) in mounts
    assert rollup["spec"]["selector"]["matchLabels"].items() <= rollup["spec"]["template"]["metadata"]["labels"].items()

    # The dashboard: its Service selects its pods and targets a port they declare; its probe and --port agree.
    (dash,) = [d for d in docs_of_kind("Deployment") if d["metadata"]["name"] == "maskwatch-dashboard"]
    (svc,) = [d for d in docs_of_kind("Service") if d["metadata"]["name"] == "maskwatch-dashboard"]
    labels = dash["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    assert dash["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (c,) = dash["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert all(p["targetPort"] in ports for p in svc["spec"]["ports"])
    assert int(c["command"][c["command"].index("--port") + 1]) == ports[c["readinessProbe"]["httpGet"]["port"]]
    assert c["command"][c["command"].index("--host") + 1] == "0.0.0.0"
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    config_dir = str(Path(c["command"][c["command"].index("--config") + 1]).parent)
    volumes = {v["name"]: v for v in dash["spec"]["template"]["spec"]["volumes"]}
    assert volumes[mounts[config_dir]]["configMap"]["name"] in cm_names

    for pm in docs_of_kind("PodMonitor"):
        assert pm["spec"]["selector"]["matchLabels"].get("ray.io/cluster") == rc_name
        for ep in pm["spec"]["podMetricsEndpoints"]:
            for label, pod in ray_pod_specs(rc):
                ports = {p.get("name") for p in pod["containers"][0].get("ports", [])}
                assert ep["port"] in ports, f"PodMonitor port {ep['port']!r} not on {label} ({sorted(ports)})"


# ---- the checks can fail -----------------------------------------------------------------------------------------


def _rename_max_replicas(rc: dict[str, Any]) -> None:
    g = rc["spec"]["workerGroupSpecs"][0]
    g["maxReplica"] = g.pop("maxReplicas")


def _typo_in_pod_spec(rc: dict[str, Any]) -> None:
    c = rc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    c["volumeMount"] = c.pop("volumeMounts")


def _unquoted_num_cpus(rc: dict[str, Any]) -> None:
    rc["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0


def _null_ray_start_params(rc: dict[str, Any]) -> None:
    rc["spec"]["workerGroupSpecs"][0]["rayStartParams"] = None


def _unquoted_yes_label(rc: dict[str, Any]) -> None:
    rc["metadata"]["labels"]["maskwatch/enabled"] = True  # what PyYAML makes of an unquoted `yes`


@pytest.mark.parametrize(
    ("mutate", "expected_in_error"),
    [
        (_rename_max_replicas, "maxReplica"),
        (_typo_in_pod_spec, "volumeMount"),
        (_unquoted_num_cpus, "num-cpus"),
        (_null_ray_start_params, "rayStartParams"),
        (_unquoted_yes_label, "maskwatch/enabled"),
    ],
    ids=["maxReplica-typo", "pod-spec-typo", "unquoted-num-cpus", "null-rayStartParams", "unquoted-yes-label"],
)
def test_schema_rejects_broken_raycluster(mutate: Any, expected_in_error: str) -> None:
    require_schemas()
    rc = copy.deepcopy(ray_cluster())
    assert not schema_errors(rc), "the RayCluster must be valid before it is broken"
    mutate(rc)
    errors = schema_errors(rc)
    assert errors, f"{mutate.__name__}: the broken RayCluster passed the schema"
    assert any(expected_in_error in e for e in errors), f"{mutate.__name__}: unexpected errors {errors}"


def test_version_check_catches_drift() -> None:
    rc = copy.deepcopy(ray_cluster())
    version = rc["spec"]["rayVersion"]
    assert not version_problems([rc], version)
    assert version_problems([rc], "2.6.0"), "a different pin must be reported"
    wrong_tag = copy.deepcopy(rc)
    c = wrong_tag["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    c["image"] = c["image"].replace(version, "2.59.0")
    assert version_problems([wrong_tag], version), "an image tag with another ray version must be reported"
    no_tag = copy.deepcopy(rc)
    no_tag["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"] = "ghcr.io/maskwatch/maskwatch"
    assert version_problems([no_tag], version), "an untagged image must be reported"


def test_resource_check_catches_drift() -> None:
    rc = copy.deepcopy(ray_cluster())
    assert not resource_problems([rc])
    fractional = copy.deepcopy(rc)
    res = fractional["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"]
    res["requests"]["cpu"] = res["limits"]["cpu"] = "1500m"
    assert resource_problems([fractional]), "fractional CPUs must be reported"
    unequal = copy.deepcopy(rc)
    res = unequal["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"]
    res["requests"]["memory"] = "1Gi"
    assert resource_problems([unequal]), "requests != limits must be reported"
    no_replicas = copy.deepcopy(rc)
    del no_replicas["spec"]["workerGroupSpecs"][0]["replicas"]
    assert resource_problems([no_replicas]), "a worker group without replicas must be reported"
