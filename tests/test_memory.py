"""Memory stays bounded: a loader's own peak RSS over a folder of many files and a
large file processed in slices, on both backends.

The peak is the kernel's high-water mark of the loader's own memory (``VmHWM``),
read by the loader as it exits. Not ``getrusage``/``wait4``: their ``ru_maxrss``
keeps the peak of the image before ``exec`` too, which is the forking test process's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from tests.conftest import BACKENDS, new_warehouse
from tests.test_hostile import _big_file

MIB = 1 << 20
# The engine may hold 256 MB; slices and batches are 8 MiB; files from 16 MiB are sliced.
SETTINGS = {"CAFE_ETL_MEMORY_LIMIT": "256MB", "CAFE_ETL_BATCH_BYTES": str(8 * MIB),
            "CAFE_ETL_LARGE_FILE_BYTES": str(16 * MIB)}
# Measured at 214-254 MiB on this workload (Python, DuckDB and the engine's batch);
# a loader that read the large file whole, or kept batches, would pass it.
BOUND = 400 * MIB


# The CLI, which writes its own peak RSS to the file named first as it exits.
_REPORTING_LOADER = """
import atexit, re, sys
report = sys.argv.pop(1)

def peak():
    with open("/proc/self/status") as status:
        kb = re.search(r"VmHWM:\\s+(\\d+) kB", status.read()).group(1)
    with open(report, "w") as out:
        out.write(kb)

atexit.register(peak)
from cafe_etl.cli import main
main()
"""


@pytest.fixture(scope="module")
def landing(generated, tmp_path_factory):
    folder = tmp_path_factory.mktemp("memory") / "landing"
    shutil.copytree(generated, folder)
    _big_file(folder / "hostile_town_05-03-2024_09-00-00.csv")  # 260,000 rows, about 36 MB: 5 slices
    return folder


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_loaders_peak_memory_stays_bounded(landing, backend, tmp_path, postgres_databases):
    url = new_warehouse(backend, tmp_path, postgres_databases)
    try:
        report = tmp_path / "peak"
        loader = subprocess.run([sys.executable, "-c", _REPORTING_LOADER, str(report), "ingest", str(landing),
                                 "--warehouse", url, "--json"], env={**os.environ, **SETTINGS}, capture_output=True,
                                text=True, timeout=600)
        assert loader.returncode == 0, loader.stderr
        files = json.loads(loader.stdout)["file_results"]
        big = [f for f in files if f["location"].endswith("hostile_town_05-03-2024_09-00-00.csv")]
        assert big[0]["rows_loaded"] == 259_995 and len(files) == len(list(landing.glob("*.csv")))
        peak = int(report.read_text()) * 1024  # VmHWM is in kB
        assert 50 * MIB < peak < BOUND, f"peak RSS {peak / MIB:.0f} MiB"
    finally:
        postgres_databases.drop(url)
