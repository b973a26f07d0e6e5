"""``reckon_build_info{version, python}``: which release a process runs, as a gauge set to 1.

The usual Prometheus idiom: a constant 1 whose labels carry the facts, so a dashboard or an
alert can join on it (``* on(instance) group_left(version) reckon_build_info``) and a rollout is
visible as the version label changing. ``version`` is the installed ``reckon`` distribution's
(``importlib.metadata``; ``unknown`` when run from a checkout that was never installed),
``python`` the interpreter's (``3.11.7``).
"""

from __future__ import annotations

import platform
import threading
from importlib import metadata
from weakref import WeakKeyDictionary

from prometheus_client import REGISTRY, CollectorRegistry, Gauge

BUILD_INFO = "reckon_build_info"
DISTRIBUTION = "reckon"

_lock = threading.Lock()
_registered: WeakKeyDictionary[CollectorRegistry, Gauge] = WeakKeyDictionary()


def build_version(distribution: str = DISTRIBUTION) -> str:
    """The installed distribution's version, or ``unknown``."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown"


def register_build_info(registry: CollectorRegistry = REGISTRY) -> Gauge:
    """Register ``reckon_build_info`` in ``registry`` (once: calling it again, from the same
    process or a test, returns the gauge already there) and set its one series to 1."""
    with _lock:
        gauge = _registered.get(registry)
        if gauge is None:
            gauge = Gauge(
                BUILD_INFO,
                "The running release: always 1, labelled with Reckon's version and Python's",
                ["version", "python"],
                registry=registry,
            )
            _registered[registry] = gauge
        gauge.labels(version=build_version(), python=platform.python_version()).set(1)
        return gauge
