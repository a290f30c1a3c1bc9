"""expegit: the campaign repository, its CLI, and a notebook API (``from expegit import open_campaign``).

The API is imported on first use (PEP 562), not here: every `expegit` command imports this package, and
`expegit status` must not pay for modules it never uses.
"""
from __future__ import annotations

from typing import Any

__all__ = ["open_campaign", "AnalysisCampaign"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'expegit' has no attribute {name!r}")
