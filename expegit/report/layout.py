"""The page shell shared by every page of the site: head, navigation, content security policy.

The policy allows scripts and styles only from files of the site itself, so even a value that slipped
past escaping could not run: ``esc`` is the first line of defence and the policy the second.
"""
from __future__ import annotations

from .fmt import esc, fmt_time

# 'self' covers file:// pages in Chromium; inline scripts, inline styles, plugins and network are refused.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "base-uri 'none'; form-action 'none'")

NAV = (("index.html", "overview", "Overview"), ("executions.html", "executions", "Executions"),
       ("plots.html", "plots", "Plots"), ("analysis.html", "analysis", "Analysis"))


def page(title: str, body: str, *, root: str, active: str, campaign: str, generated: str,
         with_data: bool = True, lazy_data: bool = False) -> str:
    """A complete HTML document; ``root`` is the relative path back to the site root ('' or '../').

    ``lazy_data``: the page names data.js in a ``<meta name="orchestra-data">`` and report.js loads it on
    first hover or click instead of at load (the overview: it must open fast however large data.js is).
    """
    current = ' class="active" aria-current="page"'
    links = "".join(f'<a href="{root}{href}"{current if key == active else ""}>{label}</a>'
                    for href, key, label in NAV)
    data = f'<script src="{root}data.js" data-orchestra-data></script>' if with_data and not lazy_data else ""
    meta = f'<meta name="orchestra-data" content="{root}data.js">' if with_data and lazy_data else ""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer"><link rel="icon" href="data:,">'
        f"{meta}"
        f"<title>{esc(title)} · {esc(campaign)}</title>"
        f'<link rel="stylesheet" href="{root}assets/report.css">'
        "</head>"
        f'<body data-root="{root}" data-page="{active}">'
        '<header class="top"><div class="wrap">'
        f'<a class="brand" href="{root}index.html"><span class="logo" aria-hidden="true"></span>'
        f'<span class="campaign">{esc(campaign)}</span></a>'
        f"<nav>{links}</nav>"
        f'<span class="generated" title="{esc(generated)}">generated {esc(fmt_time(generated))}</span>'
        "</div></header>"
        f'<main class="wrap">{body}</main>'
        '<footer class="wrap">Orchestra campaign report · static, works offline</footer>'
        '<div id="tooltip" class="tooltip" hidden></div>'
        f"{data}"
        f'<script src="{root}assets/report.js"></script>'
        "</body></html>\n"
    )
