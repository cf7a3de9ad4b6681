"""The metric names the platform's exporters are known to export, per source.

Dashboards and alert rules may only reference these (and the names our own recording rules
record): a query on a misspelt or never-exported metric returns nothing, silently, so the tests
check every selector of every expression against these lists (tests/unit/test_observability_promql.py).

Each list says where it comes from. When a pin moves (versions.toml), re-read the cited source at
the new version and update the list; the local-predictor test scrapes a REAL KServe model server
and checks the KServe list against what it serves.
"""

from __future__ import annotations

from collections.abc import Iterable


def histogram(*names: str) -> frozenset[str]:
    """The series a classic Prometheus histogram exposes."""
    return frozenset(f"{name}{suffix}" for name in names for suffix in ("_bucket", "_count", "_sum"))


def _python_histogram(*names: str) -> frozenset[str]:
    # prometheus_client also exposes <name>_created per histogram (unless
    # PROMETHEUS_DISABLE_CREATED_SERIES is set).
    return histogram(*names) | frozenset(f"{name}_created" for name in names)


# Series Prometheus itself writes for every target and for the alerting rules.
# Source: prometheus.io/docs/concepts/jobs_instances/ ("Automatically generated labels and time
# series") and prometheus.io/docs/prometheus/latest/configuration/alerting_rules/ ("Inspecting
# alerts during runtime": ALERTS, ALERTS_FOR_STATE).
PROMETHEUS = frozenset({
    "up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_samples_post_metric_relabeling",
    "scrape_series_added", "ALERTS", "ALERTS_FOR_STATE",
})

# KServe's Python model server (the sklearn, huggingface and custom Python runtimes), served on its
# HTTP port at /metrics and merged by the Istio agent into 15020/stats/prometheus.
# Source: kserve/metrics.py of the kserve wheel of the pinned KServe minor
# (`pip download --no-deps "kserve==<minor>.*"`): four Histograms labelled model_name.
# The server's /metrics serves prometheus_client's default REGISTRY, so the client's default
# process/platform/gc collectors are exported too (prometheus_client process_collector.py,
# gc_collector.py, platform_collector.py).
KSERVE = _python_histogram(
    "request_preprocess_seconds", "request_postprocess_seconds", "request_predict_seconds", "request_explain_seconds",
) | frozenset({
    "process_virtual_memory_bytes", "process_resident_memory_bytes", "process_start_time_seconds",
    "process_cpu_seconds_total", "process_open_fds", "process_max_fds",
    "python_gc_objects_collected_total", "python_gc_objects_uncollectable_total", "python_gc_collections_total",
    "python_info",
})

# Istio standard metrics, from every sidecar and gateway (reporter="destination" at the
# predictor's sidecar, reporter="source" at the ingress gateway), on 15020/stats/prometheus.
# Source: istio.io/latest/docs/reference/config/metrics/ ("Istio Standard Metrics"): COUNTERs
# and DISTRIBUTIONs (Prometheus histograms).
ISTIO = frozenset({
    "istio_requests_total", "istio_request_messages_total", "istio_response_messages_total",
    "istio_tcp_sent_bytes_total", "istio_tcp_received_bytes_total",
    "istio_tcp_connections_opened_total", "istio_tcp_connections_closed_total",
}) | histogram("istio_request_duration_milliseconds", "istio_request_bytes", "istio_response_bytes")

# NVIDIA DCGM exporter, scraped through the ServiceMonitor its chart creates
# (serviceMonitor.enabled, set by the dcgm-exporter phase). Labels: gpu, UUID, device, modelName,
# Hostname, and in Kubernetes mode the GPU's pod/namespace/container (which Prometheus renames
# exported_pod/exported_namespace/exported_container: the chart's ServiceMonitor has
# honorLabels false and the target has pod/namespace labels of its own).
# Source: the metrics ConfigMap of the dcgm-exporter chart (NVIDIA/dcgm-exporter
# deployment/templates/metrics-configmap.yaml, the chart's default counters) at the pinned chart.
DCGM = frozenset({
    "DCGM_FI_DEV_SM_CLOCK", "DCGM_FI_DEV_MEM_CLOCK", "DCGM_FI_DEV_MEMORY_TEMP", "DCGM_FI_DEV_GPU_TEMP",
    "DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "DCGM_FI_DEV_PCIE_REPLAY_COUNTER",
    "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_MEM_COPY_UTIL", "DCGM_FI_DEV_ENC_UTIL", "DCGM_FI_DEV_DEC_UTIL",
    "DCGM_FI_DEV_XID_ERRORS", "DCGM_FI_DEV_FB_FREE", "DCGM_FI_DEV_FB_USED",
    "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL", "DCGM_FI_DEV_VGPU_LICENSE_STATUS",
    "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
    "DCGM_FI_DEV_ROW_REMAP_FAILURE", "DCGM_FI_PROF_GR_ENGINE_ACTIVE", "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
    "DCGM_FI_PROF_DRAM_ACTIVE", "DCGM_FI_PROF_PCIE_TX_BYTES", "DCGM_FI_PROF_PCIE_RX_BYTES",
})

# kube-state-metrics, installed and scraped by kube-prometheus-stack (its ServiceMonitor keeps the
# objects' own namespace/pod labels). Workload families only: the ones the rules and the
# platform-health dashboard use and their siblings.
# Source: kubernetes/kube-state-metrics docs/metrics/workload/{deployment,daemonset,statefulset,pod}-metrics.md
# at the release the pinned kube-prometheus-stack bundles (its Chart.yaml dependency on the
# kube-state-metrics chart).
KUBE_STATE_METRICS = frozenset({
    # deployment-metrics.md
    "kube_deployment_annotations", "kube_deployment_status_replicas", "kube_deployment_status_replicas_ready",
    "kube_deployment_status_replicas_available", "kube_deployment_status_replicas_unavailable",
    "kube_deployment_status_replicas_updated", "kube_deployment_status_terminating_replicas",
    "kube_deployment_status_observed_generation", "kube_deployment_status_condition", "kube_deployment_spec_replicas",
    "kube_deployment_spec_paused", "kube_deployment_spec_strategy_rollingupdate_max_unavailable",
    "kube_deployment_spec_strategy_rollingupdate_max_surge", "kube_deployment_metadata_generation",
    "kube_deployment_labels", "kube_deployment_created", "kube_deployment_deletion_timestamp",
    "kube_deployment_owner",
    # daemonset-metrics.md
    "kube_daemonset_annotations", "kube_daemonset_created", "kube_daemonset_status_current_number_scheduled",
    "kube_daemonset_status_desired_number_scheduled", "kube_daemonset_status_number_available",
    "kube_daemonset_status_number_misscheduled", "kube_daemonset_status_number_ready",
    "kube_daemonset_status_number_unavailable", "kube_daemonset_status_observed_generation",
    "kube_daemonset_status_updated_number_scheduled", "kube_daemonset_metadata_generation",
    "kube_daemonset_labels", "kube_daemonset_deletion_timestamp",
    # statefulset-metrics.md
    "kube_statefulset_annotations", "kube_statefulset_status_replicas", "kube_statefulset_status_replicas_current",
    "kube_statefulset_status_replicas_ready", "kube_statefulset_status_replicas_available",
    "kube_statefulset_status_replicas_updated", "kube_statefulset_status_observed_generation",
    "kube_statefulset_replicas", "kube_statefulset_metadata_generation", "kube_statefulset_created",
    "kube_statefulset_labels",
    # pod-metrics.md (the pod and container families)
    "kube_pod_info", "kube_pod_labels", "kube_pod_owner", "kube_pod_created", "kube_pod_start_time",
    "kube_pod_status_phase", "kube_pod_status_ready", "kube_pod_status_reason", "kube_pod_status_scheduled",
    "kube_pod_status_unschedulable", "kube_pod_container_info", "kube_pod_container_status_waiting",
    "kube_pod_container_status_waiting_reason", "kube_pod_container_status_running",
    "kube_pod_container_status_terminated", "kube_pod_container_status_terminated_reason",
    "kube_pod_container_status_last_terminated_reason", "kube_pod_container_status_last_terminated_exitcode",
    "kube_pod_container_status_ready", "kube_pod_container_status_restarts_total",
    "kube_pod_container_resource_requests", "kube_pod_container_resource_limits",
})

# Envoy AI Gateway's GenAI metrics, served by the external processor container it injects into each
# Envoy proxy pod (ai-gateway-extproc, port aigw-admin 1064, /metrics; scraped by the ai-gateway
# PodMonitor, manifests/monitoring/scrape.yaml.j2). Four OTel histograms (envoyproxy/ai-gateway
# internal/metrics/genai.go@v1.1.0), named for Prometheus by the OTel Prometheus exporter: dots
# become underscores and the unit "s" becomes _seconds, while "token" adds no suffix
# (examples/monitoring/grafana-dashboard.json@v1.1.0, tests/data-plane/vcr/prometheus_metrics_test.go@v1.1.0).
# Labels: gen_ai_operation_name, gen_ai_provider_name, gen_ai_original_model, gen_ai_request_model,
# gen_ai_response_model, gen_ai_token_type (input, output, cached_input, cache_creation_input,
# reasoning; token usage only), error_type (failed requests only), otel_scope_*, and `tenant`
# (controller.metricsRequestHeaderAttributes "x-inferbox-tenant:tenant", helm-values/ai-gateway.yaml).
AI_GATEWAY = histogram(
    "gen_ai_client_token_usage", "gen_ai_server_request_duration_seconds",
    "gen_ai_server_time_to_first_token_seconds", "gen_ai_server_time_per_output_token_seconds",
)

KNOWN_METRICS: dict[str, frozenset[str]] = {
    "prometheus": PROMETHEUS,
    "kserve": KSERVE,
    "istio": ISTIO,
    "dcgm-exporter": DCGM,
    "kube-state-metrics": KUBE_STATE_METRICS,
    "ai-gateway": AI_GATEWAY,
}


def known_metric_names() -> frozenset[str]:
    return frozenset().union(*KNOWN_METRICS.values())


def source_of(name: str) -> str | None:
    """Which exporter exports ``name`` (None when none is known to)."""
    return next((source for source, names in KNOWN_METRICS.items() if name in names), None)


def unknown(names: Iterable[str], *, recorded: Iterable[str] = ()) -> list[str]:
    """The names that no known exporter exports and no recording rule of ours records."""
    allowed = known_metric_names() | frozenset(recorded)
    return sorted({name for name in names if name not in allowed})
