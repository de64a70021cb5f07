"""A deciding process freezes what it loaded and collects young objects rarely (in a subprocess: the settings are
process-wide)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support.paths import PROJECT_ROOT

SCRIPT = """
import gc, json
from cds.clinical.gctuning import settle_after_loading
loaded = [{"content": i} for i in range(1000)]
before = gc.get_threshold()
settle_after_loading()
print(json.dumps({"before": before, "after": gc.get_threshold(), "frozen": gc.get_freeze_count(),
                  "loaded_tracked": any(gc.is_tracked(x) and x in gc.get_objects() for x in loaded[:3])}))
"""


def test_settling_freezes_the_loaded_content_and_makes_young_collections_rarer() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          check=True)
    seen = json.loads(done.stdout)
    assert seen["before"][0] == 700  # CPython's default
    assert seen["after"] == [20_000, *seen["before"][1:]]
    assert seen["frozen"] >= 1000
    assert seen["loaded_tracked"] is False  # frozen objects are in no generation a collection walks
