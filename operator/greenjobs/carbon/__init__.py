"""Carbon core: intensity series, forecast providers, the planner. No Kubernetes in here."""
