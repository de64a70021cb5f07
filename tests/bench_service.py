"""`make bench`: the service under load, against a bare FastAPI endpoint measured in the same run.

Both servers run as subprocesses with the same uvicorn settings (one worker, loopback); the service with
its production path (`cds.web.app.serve`: JSON logs, SQLite store, card records). wrk drives them. Every
figure is printed next to its ratio to the bare endpoint; nothing is asserted (the machine is shared).
Results are saved under bench/results/ together with the engine figures of tests/bench_engine.py.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests import bench_engine
from tests.builders import hook_request
from tests.paths import EXAMPLE_DATE, PROJECT_ROOT
from tests.servers import free_port

RESULTS = PROJECT_ROOT / "bench" / "results"
PATIENT_VIEW = "/cds-services/hipflex-patient-view"
SCRIPT = """
local f = io.open(os.getenv("BENCH_BODY"), "rb")
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
"""
NEW_DATA = SCRIPT + """
local counter = 0
function request()
  counter = counter + 1
  local body = string.gsub(wrk.body, '"id": "p01%-', '"id": "p01-' .. counter .. '-')
  return wrk.format(nil, nil, nil, body)
end
"""


def vital_sign(index: int) -> dict[str, Any]:
    """A heart-rate Observation: what most of a real chart's Observations are, and no rule reads."""
    return {"resourceType": "Observation", "id": f"vital-{index}", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": "vital-signs"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
            "subject": {"reference": "Patient/p01"}, "effectiveDateTime": "2026-11-19",
            "valueQuantity": {"value": 60 + index % 40, "unit": "/min", "system": "http://unitsofmeasure.org",
                              "code": "/min"}}


def body_with(observations: int | None) -> bytes:
    """P01's patient-view request; with `observations`, its searchset padded with vital signs to that size."""
    body = hook_request()
    if observations is not None:
        entries = body["prefetch"]["observations"]["entry"]
        entries += [{"resource": vital_sign(i)} for i in range(observations - len(entries))]
    return json.dumps(body).encode()


def bare_app() -> Any:
    """The baseline: parse the same JSON body, answer no cards."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    app = FastAPI()

    @app.post("/cds-services/{service_id}")
    async def call(service_id: str, request: Request) -> JSONResponse:
        json.loads(await request.body())
        return JSONResponse({"cards": []})

    return app


def serve(kind: str, port: int, folder: str) -> None:
    """Run in the server subprocess (`python -m tests.bench_service --serve KIND PORT FOLDER`)."""
    import uvicorn

    from cds.settings import Settings
    from cds.web.app import serve as serve_cds

    if kind == "cds":
        settings = Settings(database_url=f"sqlite:///{folder}/bench.sqlite3", as_of=EXAMPLE_DATE,
                            patient_key_file=Path(folder) / "key")
        serve_cds(settings, host="127.0.0.1", port=port)
    else:
        uvicorn.run(bare_app(), host="127.0.0.1", port=port, log_level="warning", access_log=False,
                    log_config=None)


@contextmanager
def server(kind: str, folder: str) -> Iterator[tuple[str, int]]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "tests.bench_service", "--serve", kind, str(port), folder],
                               cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.post(f"{url}{PATIENT_VIEW}", content=body_with(None), timeout=5)
            break
        except httpx.TransportError:
            time.sleep(0.2)
    try:
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(20)


def wrk(url: str, body: bytes, *, seconds: float = 8, connections: int = 8, new_data: bool = False) -> dict[str, Any]:
    """One wrk run (one thread, so the other core is the server's): requests/s, p50, p99, errors.
    With `new_data`, every request carries Observations with new ids, so no per-content cache helps."""
    with tempfile.NamedTemporaryFile("wb", suffix=".json", delete=False) as body_file, \
            tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        body_file.write(body)
        script.write(NEW_DATA if new_data else SCRIPT)
    env = os.environ | {"BENCH_BODY": body_file.name}
    done = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "-s",
                           script.name, f"{url}{PATIENT_VIEW}"], env=env, capture_output=True, text=True, check=True)
    os.unlink(body_file.name)
    os.unlink(script.name)
    return parse_wrk(done.stdout)


def served(url: str) -> int:
    """Hook calls the service has answered, from its own /metrics."""
    text = httpx.get(f"{url}/metrics").text
    return int(sum(float(v) for v in re.findall(r'hipflex_requests_total\{endpoint="hook"[^}]*\} ([\d.e+]+)', text)))


def load_until(url: str, body: bytes, total: int) -> int:
    """Drive the service with wrk until it has answered at least `total` hook calls; returns the count."""
    rate = 100.0
    while (done := served(url)) < total:
        rate = max(wrk(url, body, seconds=min(60.0, (total - done) / rate + 1))["requests_per_s"], 1.0)
    return done


def parse_wrk(output: str) -> dict[str, Any]:
    def ms(text: str) -> float:
        value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    percentiles = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+(?:us|ms|s))", output, re.M))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    requests = re.search(r"(\d+) requests in", output)
    return {"requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),  # type: ignore[union-attr]
            "p50_ms": ms(percentiles["50"]), "p99_ms": ms(percentiles["99"]),
            "requests": int(requests.group(1)) if requests else 0, "errors": int(errors.group(1)) if errors else 0}


def paced(url: str, body: bytes, rate: float, seconds: float = 8.0) -> dict[str, Any]:
    """Latency at a fixed request rate (an EHR's steady load), from four client threads."""
    latencies: list[float] = []
    lock = threading.Lock()

    def client(offset: float) -> None:
        interval = 4 / rate
        with httpx.Client(timeout=10) as http:
            start = time.perf_counter() + offset
            for k in range(int(seconds * rate / 4)):
                pause = start + k * interval - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                began = time.perf_counter()
                http.post(f"{url}{PATIENT_VIEW}", content=body, headers={"Content-Type": "application/json"})
                with lock:
                    latencies.append((time.perf_counter() - began) * 1000)

    threads = [threading.Thread(target=client, args=(i / rate,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    latencies.sort()
    return {"rate_per_s": round(rate, 1), "p50_ms": round(statistics.median(latencies), 2),
            "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 2), "requests": len(latencies)}


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]


def service_figures(folder: str) -> dict[str, Any]:
    p01, hundred, thousand = body_with(None), body_with(100), body_with(1000)
    with server("bare", folder) as (url, _):
        bare = wrk(url, p01)
    out: dict[str, Any] = {"bare_endpoint": bare}
    with server("cds", folder) as (url, pid):
        for name, body in (("patient_view_p01", p01), ("prefetch_100_observations", hundred),
                           ("prefetch_1000_observations", thousand)):
            figures = wrk(url, body)
            figures["share_of_bare_throughput"] = round(figures["requests_per_s"] / bare["requests_per_s"], 3)
            out[name] = figures
        out["patient_view_p01_new_data_each_call"] = wrk(url, p01, new_data=True)
        out["patient_view_p01_new_data_each_call"]["share_of_bare_throughput"] = round(
            out["patient_view_p01_new_data_each_call"]["requests_per_s"] / bare["requests_per_s"], 3)
        out["prefetch_1000_observations_one_at_a_time"] = wrk(url, thousand, connections=1, seconds=5)
        half = out["patient_view_p01"]["requests_per_s"] / 2
        out["patient_view_p01_at_half_max_rate"] = paced(url, p01, half)
    with server("cds", folder) as (url, pid):
        first = load_until(url, p01, 10_000)
        after_10k = rss_mb(pid)
        second = load_until(url, p01, 100_000)
        after_100k = rss_mb(pid)
    out["memory"] = {"requests_first": first, "rss_mb_first": round(after_10k, 1), "requests_second": second,
                     "rss_mb_second": round(after_100k, 1), "growth": round(after_100k / after_10k - 1, 4)}
    return out


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "kernel": platform.release()}


def summary(results: dict[str, Any]) -> str:
    service, engine = results["service"], results["engine"]
    bare = service["bare_endpoint"]
    lines = [f"{'load':<44}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'x bare':>8}"]
    for name in ("bare_endpoint", "patient_view_p01", "patient_view_p01_new_data_each_call",
                 "prefetch_100_observations", "prefetch_1000_observations", "prefetch_1000_observations_one_at_a_time"):
        f = service[name]
        lines.append(f"{name:<44}{f['requests_per_s']:>9.0f}{f['p50_ms']:>9.2f}{f['p99_ms']:>9.2f}"
                     f"{f['requests_per_s'] / bare['requests_per_s']:>8.3f}")
    half = service["patient_view_p01_at_half_max_rate"]
    memory = service["memory"]
    lines += [f"P01 at half the max rate ({half['rate_per_s']}/s): p50 {half['p50_ms']} ms, p99 {half['p99_ms']} ms",
              f"RSS after {memory['requests_first']:,} requests {memory['rss_mb_first']} MB, after "
              f"{memory['requests_second']:,} {memory['rss_mb_second']} MB (growth {memory['growth']:.1%})",
              f"engine: durable_rules {engine['durable_rules_us_per_evaluation']} us vs plain Python "
              f"{engine['plain_python_us_per_evaluation']} us per evaluation "
              f"(x{engine['durable_over_plain_python']}); 1,000 rules x{engine['rule_scaling']['1000_over_10_rules']} "
              f"of 10; 1,000 facts x{engine['fact_scaling']['1000_over_10_facts']} of 10",
              f"validation: {engine['validation_us_per_observation']} us per Observation"]
    return "\n".join(lines)


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        results = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "machine": machine(),
                   "engine": bench_engine.run(), "service": service_figures(folder)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{results['date'][:10]}-{results['machine']['host']}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(summary(results))
    print(f"saved {path.relative_to(PROJECT_ROOT)}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        main()
