"""Web: the worker's HTTP surface (JSON API with its OpenAPI spec, the live page, bearer auth, the read gate)."""
