"""Typed, validated configuration (see load.py): ``load_config`` and the section types."""

from .load import load_config
from .parse import METRICS, parse_duration, parse_size, redact_url
from .sections import ColdConfig, Config, HotConfig, MetricsConfig, PolicyConfig, StoreConfig, WarmConfig

__all__ = [
    "redact_url",
    "METRICS",
    "ColdConfig",
    "Config",
    "HotConfig",
    "MetricsConfig",
    "PolicyConfig",
    "StoreConfig",
    "WarmConfig",
    "load_config",
    "parse_duration",
    "parse_size",
]
