"""Typed configuration: the schema, and loading it from one YAML file plus secret references."""
