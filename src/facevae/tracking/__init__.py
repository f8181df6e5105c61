"""MLflow: training runs, the registry and the champion rule, model URIs and the pyfunc flavour."""
