"""Checks, their results, and the probes built from them. No framework imports here."""

from .check import Check, CheckFunction, CheckResult
from .lifecycle import Lifecycle, Phase, StartupStep, StepState
from .probes import LivenessCondition, NotAlive, ProbeResult, Probes, UnknownCheckError
from .registry import CheckRegistry
from .runner import CheckRunner
from .status import Status

__all__ = [
    "Check",
    "CheckFunction",
    "CheckRegistry",
    "CheckResult",
    "CheckRunner",
    "Lifecycle",
    "LivenessCondition",
    "NotAlive",
    "Phase",
    "ProbeResult",
    "Probes",
    "StartupStep",
    "Status",
    "StepState",
    "UnknownCheckError",
]
