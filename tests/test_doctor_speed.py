"""lifesigns doctor stays fast: a generated 10,000-line project in well under a second.

CPU time, not wall time, is bounded: the machines that run this suite share their cores,
and waiting for one is not the doctor's work. ``bench/doctor.py`` prints both.
"""

from __future__ import annotations

import time

from bench.doctor import generate

from lifesigns.doctor import DoctorConfig, diagnose


def test_a_10000_line_project_takes_under_a_second_of_cpu(tmp_path):
    lines = generate(tmp_path / "generated", 10_000)
    assert lines >= 10_000
    diagnose([tmp_path / "generated"], DoctorConfig())  # warm: imports, caches of find_spec
    start = time.process_time()
    report = diagnose([tmp_path / "generated"], DoctorConfig())
    spent = time.process_time() - start
    assert report.lines >= 10_000
    assert {"LS102", "LS201", "LS204", "LS207", "LS211"} <= {f.code for f in report.findings}
    assert spent < 1.0, f"{spent:.2f} s of CPU for {report.lines} lines"
