"""Carbon intensity: series and the forecast providers. No Kubernetes, no planning in here."""
