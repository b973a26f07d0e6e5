"""The deployment artifacts (Dockerfile, compose.yaml, deploy/) checked with the real tools.

No broker, no Docker engine, no cluster: kubectl renders the kustomize overlays, kubernetes-validate
checks every object against the Kubernetes schemas, check-jsonschema and `docker-compose config`
check compose.yaml, hadolint checks the Dockerfile. The tools come from the dev extras.
"""
