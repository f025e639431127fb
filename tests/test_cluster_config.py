"""The deployment files under cluster/ agree with each other and with the code.

Every manifest and config parses; the `digits` commands they run exist with those flags;
the image, Ray version, ports and S3 secret are the same everywhere; the Serve
application is the one in cluster/serve_config.yaml; Prometheus and the dashboard
refer to metrics the code defines. Nothing here starts Ray or needs Docker.
"""

from __future__ import annotations

import ast
import copy
import json
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
K8S = CLUSTER / "k8s"
DOCKERFILE = CLUSTER / "Dockerfile"
LAUNCHER = CLUSTER / "launcher-aws.yaml"
PROMETHEUS = CLUSTER / "prometheus.yml"
DASHBOARD = CLUSTER / "grafana-dashboard.json"
SERVE_CONFIG = CLUSTER / "serve_config.yaml"

DASHBOARD_PORT = 8265
METRICS_PORT = 8080
JOB_METRICS_PORT = 9500
SECRET_NAME = "formdigits-s3"
POD_LABEL = ("app.kubernetes.io/name", "formdigits")
RAY_KINDS = {"RayCluster", "RayJob", "RayService"}


# ---------------------------------------------------------------------------- helpers

def load_yaml(path: Path) -> list[dict]:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def manifests() -> list[tuple[str, dict]]:
    return [(f"{p.name}#{i}", d) for p in sorted(K8S.glob("*.yaml")) for i, d in enumerate(load_yaml(p))]


def ray_manifests() -> list[tuple[str, dict]]:
    return [(name, d) for name, d in manifests() if d.get("kind") in RAY_KINDS]


def manifest(kind: str, name: str) -> dict:
    found = [d for _, d in manifests() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} named {name} under cluster/k8s, found {len(found)}"
    return found[0]


def cluster_spec(doc: dict) -> dict:
    """The RayCluster spec inside a RayCluster, RayJob or RayService."""
    spec = doc["spec"]
    return {"RayCluster": lambda: spec, "RayJob": lambda: spec["rayClusterSpec"],
            "RayService": lambda: spec["rayClusterConfig"]}[doc["kind"]]()


def groups(spec: dict) -> Iterator[tuple[str, dict]]:
    """(group name, group spec) of the head and every worker group."""
    yield "head", spec["headGroupSpec"]
    for g in spec.get("workerGroupSpecs", []):
        yield g["groupName"], g


def containers(doc: dict) -> Iterator[tuple[str, dict]]:
    for group, g in groups(cluster_spec(doc)):
        for c in g["template"]["spec"]["containers"]:
            yield group, c


def gpus(container: dict) -> int:
    return int(container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))


def ports(container: dict) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container.get("ports", [])}


def docker_image() -> str:
    """The image name the Dockerfile's build instructions tag."""
    m = re.search(r"docker build -f cluster/Dockerfile -t (\S+) \.", DOCKERFILE.read_text())
    assert m, "cluster/Dockerfile must document its `docker build -f cluster/Dockerfile -t IMAGE .`"
    return m.group(1)


def pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def pinned(package: str) -> str:
    for dep in pyproject()["project"]["dependencies"]:
        m = re.fullmatch(rf"{re.escape(package)}(\[[^\]]*\])?==(\S+)", dep)
        if m:
            return m.group(2)
    raise AssertionError(f"pyproject.toml does not pin {package}")


def parse_digits(command: str):
    """Parse a `digits ...` command line with the real CLI parser; fail clearly if it can't."""
    from formdigits.cli import build_parser

    argv = shlex.split(command)
    assert argv[0] == "digits", f"not a digits command: {command}"
    try:
        return build_parser().parse_args(argv[1:])
    except SystemExit:
        pytest.fail(f"the digits CLI rejects: {command}")


def entrypoint(name: str):
    return parse_digits(manifest("RayJob", name)["spec"]["entrypoint"])


def serve_apps(config: dict) -> dict[str, dict]:
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(config)
    return {a["name"]: a for a in config["applications"]}


def rayservice_serve_config() -> dict:
    return yaml.safe_load(manifest("RayService", "formdigits")["spec"]["serveConfigV2"])


# ---------------------------------------------------------------------------- parsing

def test_every_config_file_parses():
    files = sorted(p for p in CLUSTER.rglob("*") if p.suffix in (".yaml", ".yml", ".json"))
    assert {LAUNCHER, PROMETHEUS, DASHBOARD, K8S / "raycluster.yaml"} <= set(files)
    for path in files:
        docs = [json.loads(path.read_text())] if path.suffix == ".json" else load_yaml(path)
        assert docs and all(isinstance(d, dict) for d in docs), f"{path} holds no mapping"


def test_kubernetes_manifests_are_kuberay_v1_with_one_of_each_kind():
    kinds = sorted(d["kind"] for _, d in ray_manifests())
    assert kinds == ["RayCluster", "RayJob", "RayJob", "RayService"]
    for name, doc in ray_manifests():
        assert doc["apiVersion"] == "ray.io/v1", name
        assert doc["metadata"]["name"], name


# ---------------------------------------------------------------------------- one image, one Ray

def test_every_ray_pod_runs_the_dockerfiles_image_and_its_ray_version():
    image, ray_version = docker_image(), pinned("ray")
    for name, doc in ray_manifests():
        assert cluster_spec(doc)["rayVersion"] == ray_version, name
        for group, c in containers(doc):
            assert c["image"] == image, f"{name} {group}: {c['image']} != {image}"


def test_dockerfile_matches_pyproject_pins_and_installs_the_project():
    text = DOCKERFILE.read_text()
    base = re.search(r"^FROM (\S+)", text, re.M).group(1)
    minor = re.search(r">=3\.(\d+)", pyproject()["project"]["requires-python"]).group(1)
    py_tag = f"py3{minor}"  # requires-python ">=3.11,<3.12" -> py311
    assert base == f"rayproject/ray:{pinned('ray')}-{py_tag}-gpu"
    for pkg in ("torch", "torchvision"):
        assert f"{pkg}=={pinned(pkg)}" in text, f"Dockerfile must install {pkg}=={pinned(pkg)}"
    assert re.search(r"pip install [^\n]*\s\.(\s|$)", text), "Dockerfile must `pip install .`"
    # Every package setuptools installs is copied into the build (and not ignored).
    ignore = (CLUSTER / "Dockerfile.dockerignore").read_text()
    for pattern in pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]:
        pkg = pattern.rstrip("*")
        assert re.search(rf"^COPY .*\b{pkg}\b", text, re.M), f"Dockerfile does not copy {pkg}/"
        assert f"!{pkg}/**" in ignore, f"Dockerfile.dockerignore hides {pkg}/"


def test_launcher_uses_the_image_and_is_a_valid_cluster_config():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = load_yaml(LAUNCHER)[0]
    assert config["docker"]["image"] == docker_image()
    assert config["provider"]["type"] == "aws"
    validate_config(prepare_config(copy.deepcopy(config)))
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"] == {"CPU": 0}
    assert any(t["node_config"]["InstanceType"].startswith(("g4dn.", "g5.", "g6.", "p3.", "p4d.", "p5."))
               for t in types.values()), "no GPU worker type"


def test_launcher_starts_ray_with_the_same_ports():
    config = load_yaml(LAUNCHER)[0]
    head = " ".join(config["head_start_ray_commands"])
    worker = " ".join(config["worker_start_ray_commands"])
    assert f"--dashboard-port={DASHBOARD_PORT}" in head
    assert "--dashboard-host=0.0.0.0" in head
    assert f"--metrics-export-port={METRICS_PORT}" in head
    assert f"--metrics-export-port={METRICS_PORT}" in worker


# ---------------------------------------------------------------------------- pods

def test_ray_start_params_and_container_ports_agree():
    for name, doc in ray_manifests():
        for group, g in groups(cluster_spec(doc)):
            params = g["rayStartParams"]
            assert all(isinstance(v, str) for v in params.values()), \
                f"{name} {group}: rayStartParams values must be strings"
            assert params["metrics-export-port"] == str(METRICS_PORT), f"{name} {group}"
            for c in g["template"]["spec"]["containers"]:
                assert ports(c)["metrics"] == METRICS_PORT, f"{name} {group}"
            if group == "head":
                assert params["dashboard-port"] == str(DASHBOARD_PORT), name
                assert params["dashboard-host"] == "0.0.0.0", name
                assert params["num-gpus"] == "0", f"{name}: the head is a CPU node"
                assert ports(g["template"]["spec"]["containers"][0])["dashboard"] == DASHBOARD_PORT


def test_every_ray_cluster_requires_ray_token_authentication():
    """The Jobs API runs arbitrary commands: no cluster here may accept anonymous callers."""
    for name, doc in ray_manifests():
        assert cluster_spec(doc).get("authOptions", {}).get("mode") == "token", name


def test_gpu_worker_groups_request_gpus_and_tolerate_gpu_nodes():
    for name, doc in ray_manifests():
        head = cluster_spec(doc)["headGroupSpec"]["template"]["spec"]["containers"]
        assert all(gpus(c) == 0 for c in head), f"{name}: the head must not take a GPU"
        gpu_groups = [(group, g) for group, g in groups(cluster_spec(doc)) if group.startswith("gpu")]
        assert gpu_groups, f"{name} has no GPU worker group"
        for group, g in gpu_groups:
            c = g["template"]["spec"]["containers"][0]
            res = c["resources"]
            assert res["limits"]["nvidia.com/gpu"] == res["requests"]["nvidia.com/gpu"], f"{name} {group}"
            assert gpus(c) >= 1, f"{name} {group}"
            tolerations = g["template"]["spec"].get("tolerations", [])
            assert any(t["key"] == "nvidia.com/gpu" for t in tolerations), f"{name} {group}"


def test_s3_credentials_come_from_the_secret_as_aws_variables():
    secret = manifest("Secret", SECRET_NAME)
    keys = set(secret["stringData"])
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"} <= keys
    for value in secret["stringData"].values():
        assert "REPLACE" in value or value.startswith("us-"), "the example Secret holds a real value"
    for name, doc in ray_manifests():
        for group, c in containers(doc):
            env = {e["name"]: e for e in c.get("env", [])}
            for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_ENDPOINT_URL"):
                ref = env[var]["valueFrom"]["secretKeyRef"]
                assert ref["name"] == SECRET_NAME and ref["key"] == var, f"{name} {group} {var}"
                assert "value" not in env[var], f"{name} {group}: {var} must not be inline"
                assert var in keys or ref.get("optional"), f"{name} {group}: {var} missing from Secret"


def test_no_credentials_in_any_file():
    aws_key = re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")
    inline_secret = re.compile(r"AWS_SECRET_ACCESS_KEY[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9/+]{30,}")
    for path in CLUSTER.rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert not aws_key.search(text), f"{path} contains an AWS access key id"
            assert not inline_secret.search(text), f"{path} contains a secret access key"


def test_pod_monitor_scrapes_ports_the_pods_expose():
    monitor = manifest("PodMonitor", "formdigits")
    label, value = POD_LABEL
    assert monitor["spec"]["selector"]["matchLabels"] == {label: value}
    for name, doc in ray_manifests():
        for group, g in groups(cluster_spec(doc)):
            assert g["template"]["metadata"]["labels"][label] == value, f"{name} {group} unlabelled"
    exposed = {p for _, doc in ray_manifests() for _, c in containers(doc) for p in ports(c)}
    for endpoint in monitor["spec"]["podMetricsEndpoints"]:
        assert endpoint["port"] in exposed, f"no pod exposes port {endpoint['port']}"


# ---------------------------------------------------------------------------- commands

def test_training_rayjob_runs_digits_train_on_every_gpu():
    args = entrypoint("formdigits-train")
    assert args.command == "train" and args.gpu
    assert args.output.startswith("s3://") and args.data.startswith("s3://")
    spec = cluster_spec(manifest("RayJob", "formdigits-train"))
    gpu_total = sum(g["minReplicas"] * gpus(g["template"]["spec"]["containers"][0])
                    for _, g in groups(spec) if "minReplicas" in g)
    assert 1 <= args.workers <= gpu_total, f"--workers {args.workers} but {gpu_total} GPUs"


def test_batch_rayjob_runs_digits_job_run_on_s3_with_the_trained_checkpoint():
    args = entrypoint("formdigits-batch")
    assert (args.command, args.job_command) == ("job", "run")
    for flag in ("input", "output", "checkpoint"):
        assert getattr(args, flag).startswith("s3://"), f"--{flag} must be on S3"
    train = entrypoint("formdigits-train")
    assert args.checkpoint == f"{train.output.rstrip('/')}/{train.name}"
    head = cluster_spec(manifest("RayJob", "formdigits-batch"))["headGroupSpec"]
    assert args.metrics_port == JOB_METRICS_PORT and args.metrics_host == "0.0.0.0"
    assert ports(head["template"]["spec"]["containers"][0])["job-metrics"] == JOB_METRICS_PORT


def test_every_digits_command_in_the_docs_parses():
    readme = (CLUSTER / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh|console)?\n(.*?)```", readme, re.S)
    commands = [line.strip() for b in blocks for line in b.replace("\\\n", " ").splitlines()
                if line.strip().startswith("digits ")]
    parsed = [parse_digits(cmd) for cmd in commands]
    submits = [a for a in parsed if a.command == "job" and a.job_command == "submit"]
    assert submits, "cluster/README.md shows no `digits job submit` command"
    assert all(a.address.endswith(f":{DASHBOARD_PORT}") for a in submits)


# ---------------------------------------------------------------------------- serving

def test_rayservice_serves_the_serve_config_application():
    assert SERVE_CONFIG.exists(), "cluster/serve_config.yaml (owned by serving) is missing"
    ours = serve_apps(rayservice_serve_config())
    theirs = serve_apps(load_yaml(SERVE_CONFIG)[0])
    assert set(ours) == set(theirs)
    for name, app in ours.items():
        for key in ("import_path", "route_prefix"):
            assert app.get(key) == theirs[name].get(key), f"{name}.{key} differs from serve_config.yaml"
        assert app["import_path"] == "serving.app:build_app"
        assert app["args"]["checkpoint"].startswith("s3://")


def test_rayservice_args_are_valid_serving_settings_for_the_trained_model():
    from serving.config import ServeConfig

    for app in rayservice_serve_config()["applications"]:
        cfg = ServeConfig.from_args(app["args"])
        train = entrypoint("formdigits-train")
        assert cfg.checkpoint == f"{train.output.rstrip('/')}/{train.name}"
    config = rayservice_serve_config()
    assert config["http_options"]["port"] == 8000 and config["http_options"]["host"] == "0.0.0.0"


def test_the_serve_app_builder_builds_the_rayservice_application():
    """What KubeRay's `serve deploy` will call: import_path with args (binding needs no Ray)."""
    import importlib

    from ray import serve

    for app in rayservice_serve_config()["applications"]:
        module, attr = app["import_path"].split(":")
        built = getattr(importlib.import_module(module), attr)(app["args"])
        assert isinstance(built, serve.Application)


def test_digits_serve_takes_a_checkpoint():
    args = parse_digits("digits serve --checkpoint s3://formdigits-example/runs/best-v1 "
                        "--autoscale 1:4 --host 0.0.0.0")
    assert args.command == "serve"


# ---------------------------------------------------------------------------- monitoring

def test_prometheus_scrapes_ray_discovery_file_and_the_batch_job_port():
    from ray._private import ray_constants

    config = load_yaml(PROMETHEUS)[0]
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    files = [f for sd in jobs["ray"]["file_sd_configs"] for f in sd["files"]]
    assert files == [f"/tmp/ray/{ray_constants.PROMETHEUS_SERVICE_DISCOVERY_FILE}"]
    targets = [t for sc in jobs["digits-batch-job"]["static_configs"] for t in sc["targets"]]
    assert [int(t.rsplit(":", 1)[1]) for t in targets] == [JOB_METRICS_PORT]


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool not installed (Debian: prometheus)")
def test_promtool_accepts_the_prometheus_config():
    out = subprocess.run(["promtool", "check", "config", str(PROMETHEUS)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def dashboard_exprs() -> dict[str, list[str]]:
    dash = json.loads(DASHBOARD.read_text())
    return {p["title"]: [t["expr"] for t in p["targets"]]
            for p in dash["panels"] if p["type"] != "row"}


def defined_metric_names() -> set[str]:
    """Prometheus series names of the digits_ metrics the code defines.

    Modules importing prometheus_client expose names as given; the others use Ray's
    metrics (ray.util.metrics / ray.serve.metrics), which Ray exports with a ``ray_``
    prefix. Counters gain ``_total``; histograms ``_bucket``, ``_sum`` and ``_count``.
    """
    names: set[str] = set()
    for path in [*(ROOT / "serving").glob("*.py"), *(ROOT / "jobs").glob("*.py")]:
        text = path.read_text()
        prefix = "" if "prometheus_client" in text else "ray_"
        for node in ast.walk(ast.parse(text)):
            if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)):
                continue
            kind = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            name = node.args[0].value
            if kind not in ("Counter", "Gauge", "Histogram") or not str(name).startswith("digits_"):
                continue
            base = prefix + name
            if kind == "Counter":
                names.add(base if base.endswith("_total") else base + "_total")
            elif kind == "Histogram":
                names.update(base + s for s in ("_bucket", "_sum", "_count"))
            else:
                names.add(base)
    return names


def test_dashboard_has_throughput_latency_error_and_backlog_panels():
    titles = " | ".join(dashboard_exprs()).lower()
    for word in ("throughput", "latency", "errors", "backlog"):
        assert titles.count(word) >= 2, f"want {word} panels for batch jobs and serving: {titles}"
    exprs = " ".join(e for es in dashboard_exprs().values() for e in es)
    assert "histogram_quantile(0.5" in exprs and "histogram_quantile(0.99" in exprs


def test_dashboard_uses_only_metrics_the_code_defines():
    defined = defined_metric_names()
    assert defined, "found no digits_ metrics in serving/ or jobs/"
    for title, exprs in dashboard_exprs().items():
        for expr in exprs:
            for name in re.findall(r"\b(?:ray_)?digits_[a-z_]+", expr):
                assert name in defined, f"panel {title!r} uses {name}, not defined; have {sorted(defined)}"


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool not installed (Debian: prometheus)")
def test_dashboard_queries_are_valid_promql(tmp_path):
    rules = [{"record": f"formdigits:panel_{i}_{j}", "expr": expr}
             for i, exprs in enumerate(dashboard_exprs().values()) for j, expr in enumerate(exprs)]
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
