"""Load testing with Locust: profiles and SLO gates, local and distributed runs, reports with plots,
in-cluster runs. ``run_loadtest`` (inferbox.load.app) is what ``invoke loadtest`` calls."""
