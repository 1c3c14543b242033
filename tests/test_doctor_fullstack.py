"""lifesigns doctor on an excerpt of fastapi/full-stack-fastapi-template (MIT, see NOTICE.md).

Every finding is true of the template at the recorded commit:

* ``backend/app/core/db.py:7``: ``create_engine(str(settings.DATABASE_URL))`` has no
  ``pool_pre_ping`` (LS107) and no statement timeout (LS108);
* ``compose.yml:68``: the backend healthcheck is ``curl -f`` with no ``--max-time`` (LS204).

And what is not found is right too: the health-check route is an ``async def`` with no I/O,
the compose healthcheck's path is served by it, ``fastapi dev`` sits in
``compose.override.yml`` (a development file), and the Dockerfile's missing HEALTHCHECK is
supplied by compose. The template's third-party imports (sqlmodel, pydantic-settings,
sentry-sdk, ...) are not installed here, but ``backend/pyproject.toml`` declares them, so
LS109 does not report them.
"""

from __future__ import annotations

from pathlib import Path

from lifesigns.doctor import config, diagnose

ROOT = Path(__file__).parent / "fixtures" / "doctor" / "fullstack"


def test_every_finding_on_the_template_is_true():
    settings = config.load(ROOT)
    assert "app.models" in settings.known_modules  # the excerpt's own pyproject was read
    report = diagnose([ROOT], settings)
    found = [
        (Path(f.path).resolve().relative_to(ROOT.resolve()).as_posix(), f.line, f.code)
        for f in report.findings
    ]
    assert found == [
        ("backend/app/core/db.py", 7, "LS107"),
        ("backend/app/core/db.py", 7, "LS108"),
        ("compose.yml", 68, "LS204"),
    ]


def test_the_template_health_route_is_known_and_clean():
    report = diagnose([ROOT], config.load(ROOT))
    routes = {r.path: r for r in report.facts.routes}
    health = routes["/utils/health-check/"]
    assert health.is_async and health.dependency is None
    assert report.facts.checks_dependencies("/api/v1/utils/health-check/") is None
