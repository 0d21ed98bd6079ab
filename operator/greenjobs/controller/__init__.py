"""The kopf operator: thin handlers over the plain functions in this package."""
