"""docker-compose.yml and the Dockerfile describe the stack the README promises (Docker cannot run here,
so the files are read as data)."""

import re
from pathlib import Path

import pytest
import yaml
from django.conf import settings

BASE_DIR = Path(settings.BASE_DIR)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((BASE_DIR / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def command_of(service: dict) -> str:
    command = service["command"]
    return command if isinstance(command, str) else " ".join(map(str, command))


def test_every_part_of_the_architecture_is_a_service(services):
    assert set(services) >= {
        "postgres", "redis", "web", "worker", "extractor", "inference", "inference-gpu", "searxng",
    }  # fmt: skip


def test_the_processes_run_the_same_commands_as_make_run(services):
    assert command_of(services["web"]).startswith("daphne -b 0.0.0.0 -p 8000")
    assert "kimiweb.asgi:application" in command_of(services["web"])
    assert command_of(services["worker"]).startswith("celery -A kimiweb worker -Q agent")
    assert command_of(services["extractor"]).startswith("celery -A kimiweb worker -Q documents")
    assert "security_opt" not in services["extractor"]  # no namespaces needed: Docker's default profiles
    assert command_of(services["inference"]).startswith("python -m inference serve --model default")
    assert "--host 0.0.0.0 --port 30000" in command_of(services["inference"])


def test_the_gpu_inference_is_sglang_behind_a_profile_with_a_gpu_reservation(services):
    gpu = services["inference-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["build"]["target"] == "gpu"
    assert "lmsysorg/sglang" in gpu["build"]["args"]["SGLANG_IMAGE"]
    assert command_of(gpu).startswith("python -m inference serve --backend sglang")
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


def test_app_services_get_their_configuration_from_the_environment(services):
    for name in ("web", "worker", "setup"):
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgres://") and "@postgres:5432/" in env["DATABASE_URL"]
        assert env["REDIS_URL"] == "redis://redis:6379/0"
        assert env["LLM_BASE_URL"].endswith("http://inference:30000/v1}")
        assert env["SEARXNG_URL"] == "http://searxng:8080"
        for required in ("SECRET_KEY", "DEBUG", "ALLOWED_HOSTS", "LLM_MODEL", "LLM_API_KEY"):
            assert required in env, (name, required)
        # No secret has a default baked into the file.
        assert ":?" in env["SECRET_KEY"]


def test_every_long_running_service_has_a_healthcheck(services):
    for name, service in services.items():
        if name == "setup":
            continue
        assert service["healthcheck"]["test"], name


def test_start_order_waits_for_health_not_just_for_start(services):
    for name in ("web", "worker", "setup"):
        depends = services[name]["depends_on"]
        assert depends["postgres"] == {"condition": "service_healthy"}, name
        assert depends["redis"] == {"condition": "service_healthy"}, name
    assert services["web"]["depends_on"]["setup"] == {"condition": "service_completed_successfully"}
    assert services["worker"]["depends_on"]["searxng"] == {"condition": "service_healthy"}


def test_data_lives_in_named_volumes(compose, services):
    named = set(compose["volumes"])
    assert "postgres-data:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    assert "redis-data:/data" in services["redis"]["volumes"]
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source.startswith((".", "$")) or source in named, volume


def test_searxng_answers_json_from_the_mounted_settings(services):
    mount = next(v for v in services["searxng"]["volumes"] if v.endswith(":/etc/searxng/settings.yml:ro"))
    searxng_settings = yaml.safe_load((BASE_DIR / mount.split(":")[0]).read_text())
    assert "json" in searxng_settings["search"]["formats"]
    assert searxng_settings["use_default_settings"] is True
    assert searxng_settings["server"]["limiter"] is False


def test_the_image_pins_the_cpu_torch_and_builds_an_sglang_variant():
    dockerfile = (BASE_DIR / "Dockerfile").read_text()
    assert re.search(r"--index-url https://download.pytorch.org/whl/cpu torch==2\.13\.0", dockerfile)
    assert re.search(r"^FROM \$\{SGLANG_IMAGE\} AS gpu$", dockerfile, re.M)
    assert "ARG SGLANG_IMAGE=lmsysorg/sglang" in dockerfile
    assert re.search(r"^USER kimiweb$", dockerfile, re.M)  # not root
    ignored = (BASE_DIR / ".dockerignore").read_text().split()
    assert ".venv" in ignored and "var" in ignored


def test_a_worker_whose_main_process_is_gone_or_deaf_is_restarted(services):
    worker = services["worker"]
    assert worker["restart"] == "unless-stopped"  # an exited worker container comes back
    # tini as PID 1: the Celery main process's death ends the container, pool children included.
    assert worker["init"] is True
    command = command_of(worker)
    assert "-n celery@%h" in command  # the node name the healthcheck pings
    probe = worker["healthcheck"]["test"][1]
    assert "inspect ping -d celery@$$HOSTNAME" in probe
    # Compose does not restart an unhealthy container, so after three failed pings the probe stops it.
    assert "kill -TERM 1" in probe and "-ge 3" in probe


def test_the_worker_may_create_the_namespaces_the_python_sandbox_needs(services):
    worker = services["worker"]
    assert "seccomp=unconfined" in worker.get("security_opt", [])  # Docker's default refuses CLONE_NEWUSER
    assert "apparmor=unconfined" in worker.get("security_opt", [])
    assert not worker.get("privileged") and not worker.get("cap_add")  # nothing more than that


def test_the_image_builds_the_sandbox_python_and_needs_no_system_bubblewrap():
    dockerfile = (BASE_DIR / "Dockerfile").read_text()
    assert "python -m agent.tools.sandbox_env build" in dockerfile
    assert "KIMIWEB_SANDBOX_ENV=/opt/sandbox-env" in dockerfile
    assert not re.search(r"apt-get install[^\n]*bubblewrap", dockerfile)
