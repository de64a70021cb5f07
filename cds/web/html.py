"""What every HTML page of the service shares: the templates, the static files and the security headers.

Pages render escaped text only (Jinja autoescape) and allow only this service's own script and styles.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
STATIC = Path(str(files("cds.web") / "static"))  # package data, wherever the package is installed
templates = Environment(loader=PackageLoader("cds.web", "templates"), autoescape=select_autoescape(["html"]))
