"""The old name of the campaign factory, kept for callers written before runaway/factory.py (parasearch's
study, branches merged later): there is one factory, and this module only names it."""
from __future__ import annotations

from .factory import campaign_backend as make_backend
from .factory import profile_for

__all__ = ["make_backend", "profile_for"]
