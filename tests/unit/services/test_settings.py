from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsError

from services.placement import TopicMode
from services.settings import Settings


def test_reads_wsched_prefixed_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WSCHED_HTTP_PORT", "9999")
    monkeypatch.setenv("WSCHED_KAFKA_BOOTSTRAP", "broker:9092")
    monkeypatch.setenv("WSCHED_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("WSCHED_OPERATOR_KEY", "s3cret")
    settings = Settings()
    assert settings.http_port == 9999
    assert settings.kafka_bootstrap == "broker:9092"
    assert settings.operator_key.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)
    assert settings.effective_database_url() == f"sqlite:///{tmp_path.resolve() / 'wsched.db'}"


def test_database_url_wins_over_the_sqlite_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WSCHED_DATABASE_URL", "mysql+pymysql://root@127.0.0.1:4000/wsched")
    assert Settings().effective_database_url() == "mysql+pymysql://root@127.0.0.1:4000/wsched"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WSCHED_HTTP_PORT", "not-a-port"),
        ("WSCHED_GRPC_PORT", "70000"),
        ("WSCHED_DEV_BROKER", "redis"),
        ("WSCHED_DEPLOYER", "kubectl"),
        ("WSCHED_AUTOSCALER", "hpa"),
        ("WSCHED_WORKER_IMAGE", "has a space"),
        ("WSCHED_CHART_REPOSITORIES", '["ftp://charts.example.com"]'),
        ("WSCHED_TENANT_KINDS", '["ConfigMap", "rbac.authorization.k8s.io/ClusterRole"]'),
        ("WSCHED_TENANT_POD_SECURITY", "lenient"),
        ("WSCHED_TENANT_POD_SECURITY_OVERRIDES", '{"acme": "anything"}'),
        ("WSCHED_PIPELINE_TOPIC", "both"),
    ],
)
def test_bad_values_are_rejected_with_the_setting_named(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as info:
        Settings()
    assert name.removeprefix("WSCHED_").lower() in str(info.value)


def test_the_default_pipeline_topic_is_shared_unless_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("WSCHED_PIPELINE_TOPIC", raising=False)
    assert Settings().pipeline_topic is TopicMode.SHARED
    monkeypatch.setenv("WSCHED_PIPELINE_TOPIC", "dedicated")
    assert Settings().pipeline_topic is TopicMode.DEDICATED
    monkeypatch.setenv("WSCHED_PIPELINE_TOPIC", "Shared ")
    with pytest.raises(ValidationError, match="WSCHED_PIPELINE_TOPIC must be 'dedicated' or"):
        Settings()


def test_an_empty_variable_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """compose passes ``${WSCHED_SECRET_KEY:-}`` as an empty string when it is not set."""
    monkeypatch.setenv("WSCHED_SECRET_KEY", "")
    monkeypatch.setenv("WSCHED_WORKERS_SCHEDULER", "")
    settings = Settings()
    assert settings.secret_key is None
    assert settings.workers_scheduler_address() == settings.advertised_grpc()


def test_containment_settings_are_read_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WSCHED_CHART_ROOTS", '["/srv/charts"]')
    monkeypatch.setenv("WSCHED_CHART_REPOSITORIES", '["oci://registry.example.com/team"]')
    monkeypatch.setenv("WSCHED_TENANT_POD_SECURITY_OVERRIDES", '{"acme": "baseline"}')
    monkeypatch.setenv("WSCHED_TENANT_QUOTA", "{}")
    monkeypatch.setenv("WSCHED_WORKERS_SCHEDULER", "wsched-scheduler.wsched.svc:7000")
    settings = Settings()
    assert [str(root) for root in settings.chart_roots] == ["/srv/charts"]
    assert settings.chart_repositories == ["oci://registry.example.com/team"]
    assert settings.tenant_pod_security_overrides == {"acme": "baseline"}
    assert settings.tenant_quota == {}
    assert settings.workers_scheduler_port() == 7000


def test_a_repository_with_credentials_is_refused_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WSCHED_CHART_REPOSITORIES", '["https://user:hunter2@charts.example.com"]')
    with pytest.raises(ValidationError) as info:
        Settings()
    assert "credentials" in str(info.value) and "hunter2" not in str(info.value)


def test_a_list_setting_that_is_not_json_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WSCHED_CHART_REPOSITORIES", "https://charts.example.com")
    with pytest.raises(SettingsError, match="chart_repositories"):
        Settings()


def test_log_format_and_tracing_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = Settings()
    assert defaults.log_format == "text" and defaults.otlp_endpoint is None
    monkeypatch.setenv("WSCHED_LOG_FORMAT", "json")
    monkeypatch.setenv("WSCHED_OTLP_ENDPOINT", "http://collector:4317")
    chosen = Settings()
    assert chosen.log_format == "json" and chosen.otlp_endpoint == "http://collector:4317"
    monkeypatch.setenv("WSCHED_LOG_FORMAT", "xml")
    with pytest.raises(ValidationError, match="log_format"):
        Settings()
