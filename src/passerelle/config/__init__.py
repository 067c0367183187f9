"""Typed configuration: the schema, and loading it from one YAML file plus secret references."""

from passerelle.config.load import load_config, load_config_text
from passerelle.config.schema import Config

__all__ = ["Config", "load_config", "load_config_text"]
