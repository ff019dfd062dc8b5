"""Self-contained HTML reports of a benchmark folder or a model folder (``medseg report``)."""

from __future__ import annotations

from pathlib import Path


def write_report(folder: str | Path, output: str | Path) -> Path:
    """The report of ``folder`` (a benchmark folder with ``benchmark.json``, else a model folder) as one HTML file
    written atomically to ``output``."""
    from medseg.atomic import atomic_write
    from medseg.report.benchmark_report import benchmark_report
    from medseg.report.model_report import model_report

    folder = Path(folder)
    page = benchmark_report(folder) if (folder / "benchmark.json").is_file() else model_report(folder)
    return atomic_write(Path(output), lambda temporary: temporary.write_text(page, encoding="utf-8"))
