"""One pass over a project: find its files, parse each once, run every rule, filter.

Usage::

    from pathlib import Path
    from lifesigns.doctor import DoctorConfig, diagnose

    report = diagnose([Path("backend")], DoctorConfig(ignore=("LS109",)))
    for finding in report.findings:
        print(finding.render())

Python files are parsed first (the container rules need their routes and pools), then
Dockerfiles, YAML and shell scripts. Paths in findings are relative to the current
directory when they are under it.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path

from . import config as config_module
from . import containers, declared, dockerfile, manifests, pymodel, pyrules, shell, suppress
from .config import DoctorConfig, DoctorUsageError
from .facts import Facts
from .findings import Finding

SKIPPED_DIRS = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        ".venv",
        "venv",
        "node_modules",
        "__pycache__",
        ".mypy_cache",
        ".ruff_cache",
        ".pytest_cache",
        ".tox",
        ".nox",
        "site-packages",
        "dist",
        "build",
        ".eggs",
    }
)


@dataclass
class Report:
    """What one run found, and the files it could not read."""

    findings: list[Finding] = field(default_factory=list)
    files: int = 0
    lines: int = 0
    warnings: list[str] = field(default_factory=list)
    facts: Facts = field(default_factory=Facts)


def kind_of(path: Path) -> str | None:
    """The kind of file: python, dockerfile, yaml, shell or declarations; else ``None``."""
    name = path.name
    suffix = path.suffix.lower()
    if suffix == ".py":
        return "python"
    if (
        name in ("Dockerfile", "Containerfile")
        or name.startswith("Dockerfile.")
        or (suffix == ".dockerfile")
    ):
        return "dockerfile"
    if suffix in (".yml", ".yaml"):
        return "yaml"
    if suffix in (".sh", ".bash"):
        return "shell"
    if name == "pyproject.toml" or (name.startswith("requirements") and suffix == ".txt"):
        return "declarations"
    return None


def discover(paths: list[Path], exclude: tuple[str, ...]) -> list[Path]:
    """The files to scan under ``paths``; ``exclude`` globs apply below each given path."""
    found: list[Path] = []
    for root in paths:
        if not root.exists():
            raise DoctorUsageError(f"path {str(root)!r} does not exist")
        if root.is_file():
            found.append(root)
            continue
        for folder, dirs, files in os.walk(root):
            base = Path(folder)
            dirs[:] = sorted(
                d for d in dirs if d not in SKIPPED_DIRS and not _excluded(base / d, root, exclude)
            )
            for name in sorted(files):
                path = base / name
                if kind_of(path) and not _excluded(path, root, exclude):
                    found.append(path)
    return found


def _excluded(path: Path, root: Path, patterns: tuple[str, ...]) -> bool:
    if not patterns:
        return False
    relative = path.relative_to(root).as_posix()
    return any(
        fnmatch.fnmatch(relative, p) or fnmatch.fnmatch(path.name, p) or relative == p.rstrip("/")
        for p in patterns
    )


def shown(path: Path) -> str:
    """``path`` relative to the current directory when under it, else absolute."""
    absolute = path.resolve()
    try:
        return absolute.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return absolute.as_posix()


def _indented(finding: Finding, lines: list[str]) -> Finding:
    """A line-level finding (column 1) points at the line's first character instead."""
    if finding.col != 1 or not 1 <= finding.line <= len(lines):
        return finding
    text = lines[finding.line - 1]
    col = len(text) - len(text.lstrip()) + 1
    return finding if col == 1 else dataclasses.replace(finding, col=col)


def diagnose(paths: list[Path], config: DoctorConfig) -> Report:
    """Scan ``paths`` (files or directories) and return every finding ``config`` selects."""
    report = Report()
    sources: dict[str, list[str]] = {}
    project = pymodel.Project()
    scan = containers.Scan([], [])
    shell_findings: list[Finding] = []
    declarations = [p for p in [config_module.find_pyproject(paths[0])] if p] if paths else []
    for path in discover(paths, config.exclude):
        rel = shown(path)
        kind = kind_of(path)
        if kind == "declarations":
            declarations.append(path)
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            report.warnings.append(f"{rel}: cannot read: {exc}")
            continue
        report.files += 1
        lines = text.splitlines()
        report.lines += len(lines)
        sources[rel] = lines
        if kind == "python":
            try:
                module = pymodel.parse(path, rel, text)
            except SyntaxError as exc:
                report.warnings.append(f"{rel}:{exc.lineno}: cannot parse: {exc.msg}")
                project.unparsed.add(pymodel.module_name(path)[0])
                continue
            name = module.name
            if name in project.modules:  # two scripts of the same name in different folders
                name = module.name = rel.removesuffix(".py").replace("/", ".")
            project.modules[name] = module
        elif kind == "dockerfile":
            scan.dockerfiles.append(dockerfile.parse(path, rel, text))
        elif kind == "yaml":
            scan.services += manifests.parse(path, rel, text)
        elif kind == "shell":
            shell_findings += shell.check(rel, text)
            scan.scripts.setdefault(path.name, (rel, lines))
    project.declared = declared.read(dict.fromkeys(declarations))
    facts = report.facts
    findings = pyrules.check(project, config, facts)
    containers.record_commands(scan, facts)
    findings += containers.check(scan, facts, config)
    findings += shell_findings
    findings = [_indented(f, sources.get(f.path, [])) for f in findings]
    report.findings = sorted(
        {
            f
            for f in findings
            if config.enabled(f.code)
            and not suppress.suppressed(sources.get(f.path, []), f.line, f.code)
        }
    )
    return report
