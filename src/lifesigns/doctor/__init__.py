"""``lifesigns doctor``: find the seeds' anti-patterns in a codebase before it ships.

One pass over Python sources (:mod:`ast`, with a bounded call graph across modules),
Dockerfiles (``dockerfile-parse``), compose files and Kubernetes manifests (PyYAML) and
shell scripts. Rules are ``LS1xx`` for Python and ``LS2xx`` for containers and
orchestration; :data:`RULES` has each one's why and fix, and the README a table.

Modules: :mod:`.findings` (what is reported), :mod:`.rules` (the catalogue),
:mod:`.config` (``[tool.lifesigns.doctor]``), :mod:`.pymodel` and :mod:`.callgraph`
(the Python index and the bounded call graph), :mod:`.blocking` (what blocks),
:mod:`.pyrules` with :mod:`.pytasks`, :mod:`.pyroutes`, :mod:`.pyengines`,
:mod:`.pyimports` (with :mod:`.declared`) and :mod:`.pyfacts`; :mod:`.dockerfile`,
:mod:`.manifests`, :mod:`.commands`, :mod:`.containers`, :mod:`.shell`;
:mod:`.suppress` (inline ignores), :mod:`.engine` (one pass), :mod:`.output` (text,
JSON, SARIF).
"""

from __future__ import annotations

from .config import DoctorConfig, DoctorUsageError
from .engine import Report, diagnose
from .findings import Finding, Rule
from .rules import RULES

__all__ = ["RULES", "DoctorConfig", "DoctorUsageError", "Finding", "Report", "Rule", "diagnose"]
