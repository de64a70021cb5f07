"""The analyst's report of a population run: one self-contained HTML page (inline SVG, no script, no network)."""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

from cds.population.summary import Summary

TEMPLATES = Environment(loader=PackageLoader("cds.population", "templates"), autoescape=select_autoescape(["html"]))


def write_report(summary: Summary, path: Path) -> None:
    charts = [("Cards by kind and side", summary.cards), ("Rules behind the cards", summary.rules_fired),
              ("Data issues", summary.data_issues),
              ("Age of the patients with cards", summary.ages_of_patients_with_cards)]
    card_keys = sorted(set(summary.cards) | set(summary.baseline_cards or {}))  # before/after: every card either way
    page = TEMPLATES.get_template("report.html").render(s=summary, charts=charts, card_keys=card_keys)
    path.write_text(page, encoding="utf-8")
