"""Observability: Prometheus scraping and alert rules as prometheus-operator objects, Grafana
dashboards as code, the PromQL checker that proves their queries parse, and `invoke dashboards`.

Modules: ``manifests`` (render the monitoring objects), ``dashboards`` (the dashboard JSON, its
ConfigMaps, ``open_dashboards``), ``promql`` (the Go checker), ``metrics`` (the metric names the
platform exports), ``pins`` (the ``[observability]`` table of versions.toml); port-forwarding
is inferbox.k8s.portforward.
"""
