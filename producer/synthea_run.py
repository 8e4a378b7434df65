"""Run Synthea (``java -cp <jars> App ...``) once per argument set and cache its output.

The cache key is a digest of Synthea's version, the normalised-table format and the exact
command-line arguments (seed, patients, state, reference date, years of history, exporter
switches). A run writes into ``<key>.partial`` and renames it to ``<key>`` when complete, under
a per-key file lock, so parallel runs with the same arguments run Java once and a crashed run
never looks complete. Only the normalised tables (``synthea_tables``) and Synthea's console
log are kept; the raw export is removed (it is larger and its row order is not stable).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Final, TextIO

from producer.synthea_install import SyntheaError, file_lock, find_java, install_jars
from producer.synthea_settings import SYNTHEA_VERSION, SyntheaSettings
from producer.synthea_tables import SYNTHEA_FILES, normalise

logger = logging.getLogger(__name__)

MAIN_CLASS: Final = "App"
TABLES_FORMAT: Final = 1  # bump when synthea_tables writes something else: new cache keys
DONE: Final = "run.json"
LOG: Final = "synthea.log"
DEFAULT_STATE: Final = "Massachusetts"
DEFAULT_REFERENCE_DATE: Final = date(2026, 12, 1)
DEFAULT_YEARS: Final = 4
LOG_TAIL_LINES: Final = 25


@dataclass(frozen=True)
class SyntheaRun:
    """What Synthea is asked to simulate; equal runs give equal output on any day."""

    seed: int
    patients: int
    state: str = DEFAULT_STATE
    reference_date: date = DEFAULT_REFERENCE_DATE
    years: int = DEFAULT_YEARS

    def arguments(self, out_dir: Path) -> list[str]:
        """``App``'s arguments. ``-r`` alone only sets the reference date (ages); the
        simulation still runs until *now* unless ``-e`` pins its end too."""
        day = self.reference_date.strftime("%Y%m%d")
        return [
            "-s", str(self.seed), "-cs", str(self.seed), "-r", day, "-e", day,
            "-p", str(self.patients),
            f"--exporter.years_of_history={self.years}",
            "--exporter.csv.export=true",
            "--exporter.fhir.export=false",
            "--exporter.hospital.fhir.export=false",
            "--exporter.practitioner.fhir.export=false",
            "--exporter.metadata.export=false",  # its file names carry the wall-clock time
            # Synthea ignores both lists when both are set; its default excludes a file.
            "--exporter.csv.excluded_files=",
            f"--exporter.csv.included_files={','.join(SYNTHEA_FILES)}",
            f"--exporter.baseDirectory={out_dir}",
            self.state,
        ]

    def key(self) -> str:
        recipe = {"synthea": SYNTHEA_VERSION, "tables": TABLES_FORMAT,
                  "arguments": self.arguments(Path("OUT"))}
        return hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:20]


LineSink = Callable[[str], None]


def cached_tables(run: SyntheaRun, settings: SyntheaSettings) -> Path | None:
    folder = settings.runs_root / run.key()
    return folder if (folder / DONE).is_file() else None


def synthea_tables_dir(run: SyntheaRun, settings: SyntheaSettings,
                       on_line: LineSink | None = None) -> Path:
    """Folder of the normalised tables for ``run``; runs Synthea only when not cached.

    ``on_line`` receives each line Synthea prints (progress); it is not called on a cache hit.
    """
    folder = cached_tables(run, settings)
    if folder is not None:
        logger.info("Synthea output for these arguments is cached in %s", folder)
        return folder
    settings.runs_root.mkdir(parents=True, exist_ok=True)
    with file_lock(settings.runs_root / f"{run.key()}.lock"):
        # Another process may have made the same run while we waited for the lock.
        folder = cached_tables(run, settings)
        if folder is not None:
            return folder
        return _run_into_cache(run, settings, on_line)


def _run_into_cache(run: SyntheaRun, settings: SyntheaSettings,
                    on_line: LineSink | None) -> Path:
    folder = settings.runs_root / run.key()
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    raw = staging / "synthea"
    seconds = run_java(run, settings, raw, staging / LOG, on_line)
    normalise(raw / "csv", staging)
    shutil.rmtree(raw)
    record = {"synthea_version": SYNTHEA_VERSION, "arguments": run.arguments(Path("OUT")),
              "seconds": round(seconds, 1)}
    (staging / DONE).write_text(json.dumps(record, indent=2) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    logger.info("Synthea ran in %.1f s; output cached in %s", seconds, folder)
    return folder


def java_command(run: SyntheaRun, settings: SyntheaSettings, out_dir: Path) -> list[str]:
    libs = install_jars(settings)
    heap = [f"-Xmx{settings.heap}"] if settings.heap else []
    return [find_java(settings), *heap, "-cp", f"{libs}/*", MAIN_CLASS,
            *run.arguments(out_dir)]


def run_java(run: SyntheaRun, settings: SyntheaSettings, out_dir: Path, log_path: Path,
             on_line: LineSink | None) -> float:
    """Run Synthea into ``out_dir``, its console into ``log_path``; return the wall time."""
    command = java_command(run, settings, out_dir)
    logger.info("running Synthea %s: %d patients, %s, seed %d, reference date %s, %d years",
                SYNTHEA_VERSION, run.patients, run.state, run.seed, run.reference_date, run.years)
    started = time.monotonic()
    with log_path.open("w") as log, subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        cwd=log_path.parent,
    ) as process:
        # A JVM that hangs without printing would block the read loop; the timer ends it.
        watchdog = threading.Timer(settings.run_timeout_s, process.kill)
        watchdog.start()
        try:
            _pump(process, log, on_line)
        except BaseException:
            process.kill()
            raise
        finally:
            watchdog.cancel()
    seconds = time.monotonic() - started
    _check_output(process.returncode, out_dir, log_path, seconds, settings)
    return seconds


def _pump(process: subprocess.Popen[str], log: TextIO, on_line: LineSink | None) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        log.write(line)
        if on_line is not None:
            on_line(line.rstrip("\n"))
    process.wait()


def _check_output(returncode: int, out_dir: Path, log_path: Path, seconds: float,
                  settings: SyntheaSettings) -> None:
    missing = [name for name in SYNTHEA_FILES if not (out_dir / "csv" / name).is_file()]
    if returncode == 0 and not missing:
        return
    if seconds >= settings.run_timeout_s:
        cause = f"took longer than {settings.run_timeout_s:.0f} s (SYNTHEA_RUN_TIMEOUT_S)"
    elif returncode != 0:
        cause = f"failed (exit {returncode})"
    else:
        cause = f"wrote no {', '.join(missing)}"
    tail = "\n".join(log_path.read_text().splitlines()[-LOG_TAIL_LINES:])
    raise SyntheaError(f"Synthea {cause}; its console ({log_path}) ends with:\n{tail}")
