"""Rules the seed fixtures do not exercise, each on a small project written by the test."""

from __future__ import annotations

import textwrap
from pathlib import Path

from lifesigns.doctor import DoctorConfig, diagnose

LIFESIGNS_APP = """
from fastapi import FastAPI
from lifesigns import Lifesigns

signs = Lifesigns(service="orders"{extra})
app = FastAPI()
signs.install(app)
"""


def found(root: Path, **settings) -> list[tuple[str, int, str]]:
    report = diagnose([root], DoctorConfig(**settings))
    return [
        (Path(f.path).resolve().relative_to(root.resolve()).as_posix(), f.line, f.code)
        for f in report.findings
    ]


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    return root


def test_several_workers_with_a_side_port_need_lifesigns_run(tmp_path):
    write(
        tmp_path,
        {
            "app.py": LIFESIGNS_APP.format(extra=", side_port=9000"),
            "Dockerfile": """
            FROM python:3.12-slim
            HEALTHCHECK CMD lifesigns probe http://127.0.0.1:8000/livez --timeout 4
            CMD ["gunicorn", "app:app", "-k", "uvicorn.workers.UvicornWorker", "-w", "4"]
        """,
        },
    )
    assert found(tmp_path) == [("Dockerfile", 3, "LS202")]
    write(
        tmp_path,
        {
            "Dockerfile": """
        FROM python:3.12-slim
        HEALTHCHECK CMD lifesigns probe http://127.0.0.1:8000/livez --timeout 4
        CMD ["lifesigns", "run", "--", "gunicorn", "app:app", "-w", "4"]
    """
        },
    )
    assert found(tmp_path) == []


def test_gunicorn_timeout_zero_and_a_missing_healthcheck(tmp_path):
    write(
        tmp_path,
        {
            "Dockerfile": """
        FROM python:3.12 AS build
        HEALTHCHECK CMD true
        FROM python:3.12-slim
        ENV WEB_CONCURRENCY=2
        CMD gunicorn app:app --timeout 0
    """
        },
    )
    # the HEALTHCHECK of the build stage does not count: only the last stage runs
    assert found(tmp_path) == [("Dockerfile", 3, "LS206"), ("Dockerfile", 5, "LS203")]


def test_a_compose_healthcheck_stands_in_for_the_dockerfile_one(tmp_path):
    write(
        tmp_path,
        {
            "api/Dockerfile": 'FROM python:3.12-slim\nCMD ["uvicorn", "app:app"]\n',
            "compose.yaml": """
            services:
              api:
                build: {context: ./api}
                healthcheck:
                  test: wget -qO- -T 3 http://127.0.0.1:8000/livez
        """,
        },
    )
    assert found(tmp_path) == []
    write(
        tmp_path,
        {
            "compose.yaml": """
        services:
          api:
            build: ./api
            healthcheck:
              test: ["CMD-SHELL", "wget -qO- http://127.0.0.1:8000/livez"]
    """
        },
    )
    assert found(tmp_path) == [("compose.yaml", 5, "LS204")]


def test_probe_timeout_and_grace_period_against_lifesigns_settings(tmp_path):
    write(
        tmp_path,
        {
            "app.py": LIFESIGNS_APP.format(extra=", probe_budget=2.0"),
            "deploy.yaml": """
            apiVersion: apps/v1
            kind: Deployment
            metadata: {name: orders}
            spec:
              template:
                spec:
                  terminationGracePeriodSeconds: 10
                  containers:
                    - name: api
                      command: ["uvicorn", "app:app"]
                      env: [{name: LIFESIGNS_GRACE, value: "20"}]
                      startupProbe: {httpGet: {path: /startupz, port: 8000}, timeoutSeconds: 3}
                      livenessProbe: {httpGet: {path: /livez, port: 8000}}
                      readinessProbe:
                        httpGet: {path: /readyz, port: 8000}
                        timeoutSeconds: 2
        """,
        },
    )
    assert found(tmp_path) == [("deploy.yaml", 7, "LS210"), ("deploy.yaml", 16, "LS209")]


def test_compose_stop_grace_period_defaults_to_10_s(tmp_path):
    write(
        tmp_path,
        {
            "app.py": LIFESIGNS_APP.format(extra=""),
            "compose.yaml": """
            services:
              api:
                image: orders
                command: uvicorn app:app --host 0.0.0.0
                healthcheck: {test: "lifesigns probe http://127.0.0.1:8000/livez"}
        """,
        },
    )
    assert found(tmp_path) == [("compose.yaml", 2, "LS210")]
    write(
        tmp_path,
        {
            "compose.yaml": """
        services:
          api:
            image: orders
            command: uvicorn app:app --host 0.0.0.0
            stop_grace_period: 1m
            healthcheck: {test: "lifesigns probe http://127.0.0.1:8000/livez"}
    """
        },
    )
    assert found(tmp_path) == []


def test_liveness_on_readyz_and_lifesigns_health(tmp_path):
    write(
        tmp_path,
        {
            "app.py": LIFESIGNS_APP.format(extra=""),
            "pod.yaml": """
            apiVersion: v1
            kind: Pod
            metadata: {name: orders}
            spec:
              terminationGracePeriodSeconds: 30
              containers:
                - name: api
                  livenessProbe: {httpGet: {path: /health, port: 8000}}
                  readinessProbe: {httpGet: {path: /readyz, port: 8000}, timeoutSeconds: 2}
        """,
        },
    )
    assert found(tmp_path) == [("pod.yaml", 8, "LS205")]


def test_inline_ignores_name_their_codes(tmp_path):
    write(
        tmp_path,
        {
            "jobs.py": """
        import asyncio
        import time

        asyncio.ensure_future(asyncio.sleep(1))  # lifesigns: ignore[LS101] a test of ignores
        asyncio.ensure_future(asyncio.sleep(1))  # lifesigns: ignore[LS102] the wrong code

        async def nap():
            # lifesigns: ignore[LS102, LS103] on the line above the finding
            time.sleep(1)
            time.sleep(2)  # lifesigns: ignore
    """
        },
    )
    assert found(tmp_path) == [("jobs.py", 5, "LS101")]


def test_a_restart_through_a_shell_function_is_followed(tmp_path):
    write(
        tmp_path,
        {
            "watch.sh": """
        #!/bin/sh
        restart_api() {
            docker compose restart api
        }
        until false; do
            curl -sf --max-time 2 http://localhost:8000/livez || restart_api
            sleep 10
        done
        docker compose restart api   # outside any loop: a one-off, not reported
    """
        },
    )
    assert found(tmp_path) == [("watch.sh", 6, "LS211")]


def test_reload_in_a_development_compose_file_is_not_production(tmp_path):
    command = "    command: fastapi dev app/main.py\n"
    write(tmp_path, {"compose.override.yml": "services:\n  api:\n" + command})
    assert found(tmp_path) == []
    write(tmp_path, {"compose.prod.yml": "services:\n  api:\n" + command})
    assert found(tmp_path) == [("compose.prod.yml", 3, "LS201")]


def test_a_module_in_newer_syntax_still_resolves_its_imports(tmp_path):
    write(
        tmp_path,
        {
            "app/__init__.py": "",
            "app/deps.py": "try:\n    pass\nexcept ValueError, TypeError:\n    pass\n",
            "app/main.py": "from app.deps import get_db\nfrom app.nowhere import x\n",
        },
    )
    report = diagnose([tmp_path], DoctorConfig())
    assert [(f.line, f.code) for f in report.findings] == [(2, "LS109")]
    assert "module 'app.nowhere' does not exist in the application" in report.findings[0].message
    assert any("cannot parse" in w for w in report.warnings)


def test_a_coroutine_loop_is_bounded_by_a_helper_that_applies_a_timeout(tmp_path):
    write(
        tmp_path,
        {
            "worker.py": """
        import asyncio

        async def fetch_one(queue):
            return await asyncio.wait_for(queue.get(), timeout=30)

        async def consume(queue):
            while True:
                item = await fetch_one(queue)
                print(item)

        async def consume_forever(queue):
            while True:
                item = await queue.get()
                print(item)
    """
        },
    )
    assert found(tmp_path) == [("worker.py", 12, "LS103")]


def test_blocking_calls_only_through_the_applications_own_functions(tmp_path):
    write(
        tmp_path,
        {
            "svc/__init__.py": "from .helpers import slow as exported\n",
            "svc/helpers.py": """
            import subprocess

            def slow():
                return subprocess.run(["true"], check=True)

            def offloaded():
                return 1
        """,
            "svc/routes.py": """
            import asyncio

            from svc import exported
            from svc.helpers import offloaded, slow

            async def a():
                await asyncio.to_thread(slow)  # passed, not called: runs in a thread
                return offloaded()

            async def b():
                return exported()
        """,
        },
    )
    report = diagnose([tmp_path], DoctorConfig())
    (finding,) = report.findings
    assert finding.code == "LS102" and finding.line == 11
    assert "subprocess.run reached from async def b via helpers.slow" in finding.message


def test_pool_sizing_from_the_command_line_figures(tmp_path):
    write(
        tmp_path,
        {
            "db.py": """
        from sqlalchemy.ext.asyncio import create_async_engine

        engine = create_async_engine(
            "postgresql+asyncpg://db/app", pool_size=10, pool_pre_ping=True,
            connect_args={"command_timeout": 5},
        )
    """
        },
    )
    assert found(tmp_path, max_connections=100, workers=4) == []  # 20 x 4 = 80
    assert found(tmp_path, max_connections=100, workers=4, replicas=2) == [("db.py", 3, "LS212")]


def test_an_async_route_using_the_session_of_a_sync_dependency(tmp_path):
    write(
        tmp_path,
        {
            "api.py": """
        from fastapi import Depends, FastAPI
        from sqlalchemy import create_engine, text
        from sqlalchemy.orm import sessionmaker

        engine = create_engine("sqlite:///orders.db")
        SessionLocal = sessionmaker(bind=engine)
        app = FastAPI()

        def get_db():
            db = SessionLocal()
            try:
                yield db
            finally:
                db.close()

        @app.get("/orders")
        async def orders(db=Depends(get_db)):
            return db.execute(text("SELECT * FROM orders")).all()

        @app.get("/threaded")
        def threaded(db=Depends(get_db)):
            return db.execute(text("SELECT 1")).all()
    """
        },
    )
    assert found(tmp_path) == [("api.py", 18, "LS110")]


def test_loops_that_can_end_and_scripts_are_not_reported(tmp_path):
    write(
        tmp_path,
        {
            "ws.py": """
        import asyncio

        async def relay(websocket):
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                for _ in range(3):
                    if message.get("text") is None:
                        break  # leaves the for, not the while: still a way out above

        async def forever(websocket):
            while True:
                message = await websocket.receive()
                for _ in range(3):
                    break  # only the inner loop

        if __name__ == "__main__":
            loop = asyncio.new_event_loop()
            loop.create_task(forever(None))
            loop.run_forever()
    """
        },
    )
    assert found(tmp_path) == [("ws.py", 13, "LS103")]


def test_methods_of_module_level_instances_are_followed(tmp_path):
    write(
        tmp_path,
        {
            "app/__init__.py": "",
            "app/reports.py": """
            import time

            class ReportBuilder:
                def build(self, week):
                    return self._fetch(week)

                def _fetch(self, week):
                    time.sleep(0.5)
                    return []

            builder = ReportBuilder()
        """,
            "app/routes.py": """
            from app.reports import builder

            async def get_report(week: int):
                return builder.build(week)
        """,
        },
    )
    report = diagnose([tmp_path], DoctorConfig())
    (finding,) = report.findings
    assert (finding.code, finding.line) == ("LS102", 4)
    assert finding.message.startswith(
        "blocking call time.sleep reached from async def get_report via "
        "ReportBuilder.build -> ReportBuilder._fetch ("
    )
    assert finding.message.endswith("app/reports.py:8)")


def test_a_missing_import_the_project_declares_is_the_environment_not_the_project(tmp_path):
    write(
        tmp_path,
        {
            "requirements.txt": "chromadb==0.5.0  # vector store\nPyJWT>=2\n-r base.txt\n",
            "app.py": """
            import aio_pika
            import chromadb
            import jwt
        """,
        },
    )
    report = diagnose([tmp_path], DoctorConfig())
    assert [(f.line, f.code) for f in report.findings] == [(1, "LS109")]
    assert "'aio_pika' is not installed in this environment, nor declared" in (
        report.findings[0].message
    )


def test_scanning_part_of_a_package_resolves_the_rest_on_disk(tmp_path):
    write(
        tmp_path,
        {
            "app/__init__.py": "",
            "app/db.py": "engine = None\n",
            "app/api/__init__.py": "",
            "app/api/routes.py": "from app.db import engine\nfrom app.cache import redis\n",
        },
    )
    report = diagnose([tmp_path / "app" / "api"], DoctorConfig())
    assert [(f.line, f.code) for f in report.findings] == [(2, "LS109")]
    assert "'app.cache' does not exist in the application" in report.findings[0].message


def test_starlette_routes_and_add_api_route_are_routes_too(tmp_path):
    write(
        tmp_path,
        {
            "app.py": """
        from fastapi import FastAPI
        from starlette.applications import Starlette
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        def health(request):
            return JSONResponse({"ok": True})

        async def ping(request):
            async with request.app.state.engine.connect() as conn:
                await conn.execute("SELECT 1")
            return JSONResponse({"ok": True})

        app = Starlette(routes=[Route("/health", health), Route("/ready", endpoint=ping)])
        api = FastAPI()
        api.add_api_route("/ping", ping)
    """
        },
    )
    assert found(tmp_path) == [("app.py", 6, "LS104"), ("app.py", 11, "LS105")]


def test_a_flag_is_reported_on_the_instruction_that_carries_it(tmp_path):
    write(
        tmp_path,
        {
            "Dockerfile": """
        FROM python:3.12-slim
        HEALTHCHECK CMD lifesigns probe http://127.0.0.1:8000/livez --timeout 4
        ENTRYPOINT ["gunicorn", "-k", "uvicorn.workers.UvicornWorker"]
        CMD ["app:app", "--timeout=0"]
    """
        },
    )
    assert found(tmp_path) == [("Dockerfile", 4, "LS203")]


def test_the_server_command_inside_an_entrypoint_script(tmp_path):
    write(
        tmp_path,
        {
            "Dockerfile": """
            FROM python:3.12-slim
            COPY start.sh /start.sh
            CMD ["/start.sh"]
        """,
            "start.sh": """
            #!/bin/sh
            # uvicorn app:app --reload   (a comment: not run)
            alembic upgrade head
            exec uvicorn app:app --host 0.0.0.0 --reload
        """,
        },
    )
    assert found(tmp_path) == [("start.sh", 4, "LS201")]
