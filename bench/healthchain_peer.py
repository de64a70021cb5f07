"""The Python peer for `make bench`: HealthChain's own CDS Hooks gateway with a trivial patient-view handler
that returns one fixed card. Runs in its own venv (HealthChain is not a dependency of this project).

Usage: python bench/healthchain_peer.py PORT   (prints the hook's path, then serves on 127.0.0.1:PORT)
"""

from __future__ import annotations

import sys

import uvicorn
from healthchain.gateway import CDSHooksService, HealthChainAPI
from healthchain.models import CDSRequest, CDSResponse

app = HealthChainAPI(title="peer")
cds = CDSHooksService()


@cds.hook("patient-view", id="peer-patient-view")  # type: ignore[untyped-decorator]
def patient_view(request: CDSRequest) -> CDSResponse:  # noqa: ARG001 - the trivial handler reads nothing
    return CDSResponse(cards=[{"summary": "Consider end-range hip-flexor strengthening", "indicator": "info",
                               "source": {"label": "peer"}}])


app.register_service(cds)

if __name__ == "__main__":
    hook = next(path for path in app.openapi()["paths"] if path.endswith("/peer-patient-view"))
    print(hook, flush=True)
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
