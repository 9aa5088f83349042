"""Local Kubernetes test bed for the operator tests."""
