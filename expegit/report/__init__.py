"""The campaign report: a self-contained static site rendered from execution records.

Pure: the caller reads git and hands over a ``ReportData``; ``write_report`` writes the site (opens from
file://, works offline, no third-party dependency), ``parse_report_data`` reads its data back.
"""
from __future__ import annotations

from .datafile import load_report_payload, parse_report_data
from .model import CommitInfo, ExecutionView, Objective, OutputLoader, ReportData
from .site import write_report

__all__ = ["CommitInfo", "ExecutionView", "Objective", "OutputLoader", "ReportData", "write_report",
           "parse_report_data", "load_report_payload"]
