"""The distributions a project declares: ``pyproject.toml`` and ``requirements*.txt``.

LS109 reports an import that does not resolve here; when the project declares the
distribution that provides it, the environment (not the project) lacks it, and nothing is
reported: the image built from those declarations will have it. Import names are matched
to distribution names after normalising (``pydantic_settings`` and ``pydantic-settings``),
plus the handful of well-known distributions whose import name differs.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
IMPORT_NAMES = {
    "jwt": "pyjwt",
    "yaml": "pyyaml",
    "PIL": "pillow",
    "sklearn": "scikit-learn",
    "cv2": "opencv-python",
    "bs4": "beautifulsoup4",
    "dateutil": "python-dateutil",
    "dotenv": "python-dotenv",
    "jose": "python-jose",
    "multipart": "python-multipart",
    "magic": "python-magic",
    "attr": "attrs",
    "OpenSSL": "pyopenssl",
    "google": "protobuf",
    "psycopg2": "psycopg2-binary",
    "MySQLdb": "mysqlclient",
    "dockerfile_parse": "dockerfile-parse",
}


def normalise(name: str) -> str:
    """PEP 503 normalisation, with ``_`` for the separator (an import name's spelling)."""
    return re.sub(r"[-_.]+", "_", name).lower()


def _requirement(line: str) -> str | None:
    line = line.split("#", 1)[0].strip()
    if not line or line.startswith(("-", "git+", "http")):
        return None
    match = _NAME.match(line)
    return normalise(match.group(1)) if match else None


def _pyproject(path: Path) -> Iterable[str]:
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return []
    project = data.get("project", {})
    lists: list[Any] = [project.get("dependencies", [])]
    lists += list(project.get("optional-dependencies", {}).values())
    lists += list(data.get("dependency-groups", {}).values())
    poetry = data.get("tool", {}).get("poetry", {})
    names = [str(k) for k in poetry.get("dependencies", {})]
    for entries in lists:
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, str) and (name := _requirement(entry)):
                names.append(name)
    return [normalise(n) for n in names]


def read(paths: Iterable[Path]) -> set[str]:
    """Every distribution declared in the given pyproject and requirements files."""
    declared: set[str] = set()
    for path in paths:
        if path.name == "pyproject.toml":
            declared.update(_pyproject(path))
            continue
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            continue
        declared.update(name for line in lines if (name := _requirement(line)))
    return declared


def provides(declared: set[str], top: str) -> bool:
    """Whether a declared distribution provides the top-level import ``top``."""
    wanted = normalise(top)
    if wanted in declared or normalise(IMPORT_NAMES.get(top, top)) in declared:
        return True
    return any(name.replace("python_", "", 1) == wanted for name in declared)
