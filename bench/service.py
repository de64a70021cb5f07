"""`make bench`: the service under load, beside a bare FastAPI endpoint and the Python peer (HealthChain's
trivial patient-view handler), all measured in the same run.

Every server runs as a subprocess with the same uvicorn settings on loopback; the service with its
production path (`cds.web.app.serve`: JSON logs, SQLite store, card records), with the decision cache off
and new Observation ids in every call unless a line says otherwise (a benchmark that repeats one body would
measure only the caches). wrk drives them. Every figure is printed with its ratio to the bare endpoint and
its target; nothing is asserted (the machine is shared). `make bench` takes under 5 minutes and prints what
runs now and how long is left; `make bench-long` adds the 100,000-call memory run. Results are saved under
bench/results/ together with the engine figures of bench/engine.py.
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
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from bench import engine as bench_engine
from tests.support.builders import hook_request
from tests.support.paths import EXAMPLE_DATE, PROJECT_ROOT
from tests.support.servers import free_port

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
    """The baseline: parse the same JSON body, answer no cards (Request is imported at module level: with
    postponed annotations FastAPI resolves it there, and a local import made it a query parameter, so every
    call was a 422 and the baseline measured error answers)."""
    app = FastAPI()

    @app.post("/cds-services/{service_id}")
    async def call(service_id: str, request: Request) -> JSONResponse:  # noqa: ARG001 - the route's shape
        json.loads(await request.body())
        return JSONResponse({"cards": []})

    return app


PEER_VENV = PROJECT_ROOT / ".venv-healthchain"
PEER = "healthchain==0.16.1"


def serve(kind: str, port: int) -> None:
    """Run in the server subprocess (`python -m bench.service --serve bare PORT`): the bare baseline endpoint."""
    import uvicorn

    if kind == "bare":
        uvicorn.run(bare_app(), host="127.0.0.1", port=port, log_level="warning", access_log=False,
                    log_config=None)


def peer_python() -> Path | None:
    """HealthChain in its own venv (made once, kept in .venv-healthchain); None when it cannot be installed."""
    python = PEER_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        installed = subprocess.run([str(python), "-m", "pip", "install", "--quiet", PEER], capture_output=True,
                                   text=True, check=False)
        if installed.returncode != 0:
            print(f"  (HealthChain could not be installed: {installed.stderr.strip()[-200:]})", flush=True)
            return None
    return python


@contextmanager
def server(kind: str, folder: str, *, workers: int = 1, cache: int = 0) -> Iterator[tuple[str, int]]:
    """A server subprocess: `cds` (the service), `bare` (the baseline) or `peer` (HealthChain); yields the URL of
    its patient-view hook and its pid ("" when the peer could not be installed)."""
    port = free_port()
    path = PATIENT_VIEW
    env = os.environ | {"HIPFLEX_DATA_DIR": folder, "HIPFLEX_AS_OF": EXAMPLE_DATE.isoformat(),
                        "HIPFLEX_DECISION_CACHE_SIZE": str(cache), "HIPFLEX_MAX_CALLS_IN_FLIGHT": "10000"}
    if kind == "cds":
        command = [sys.executable, "-m", "cds.cli", "serve", "--port", str(port), "--workers", str(workers)]
    elif kind == "peer":
        python = peer_python()
        if python is None:
            yield "", 0
            return
        command = [str(python), str(PROJECT_ROOT / "bench" / "healthchain_peer.py"), str(port)]
    else:
        command = [sys.executable, "-m", "bench.service", "--serve", kind, str(port)]
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True)
    if kind == "peer" and process.stdout is not None:
        path = process.stdout.readline().strip()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.post(f"{url}{path}", content=body_with(None), timeout=5,
                       headers={"Content-Type": "application/json"})
            break
        except httpx.TransportError:
            time.sleep(0.2)
    try:
        yield f"{url}{path}", process.pid
    finally:
        process.terminate()
        process.wait(20)


def wrk(endpoint: str, body: bytes, *, seconds: float = 8, connections: int = 8,
        new_data: bool = False) -> dict[str, Any]:
    """One wrk run (one thread, so the other core is the server's): requests/s, p50, p99, errors.
    With `new_data`, every request carries Observations with new ids, so no per-content cache helps."""
    with tempfile.NamedTemporaryFile("wb", suffix=".json", delete=False) as body_file, \
            tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        body_file.write(body)
        script.write(NEW_DATA if new_data else SCRIPT)
    env = os.environ | {"BENCH_BODY": body_file.name}
    done = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "-s",
                           script.name, endpoint], env=env, capture_output=True, text=True, check=True)
    os.unlink(body_file.name)
    os.unlink(script.name)
    return parse_wrk(done.stdout)


def served(endpoint: str) -> int:
    """Hook calls the service has answered, from its own /metrics."""
    text = httpx.get(endpoint.split("/cds-services", 1)[0] + "/metrics").text
    return int(sum(float(v) for v in re.findall(r'hipflex_requests_total\{endpoint="hook"[^}]*\} ([\d.e+]+)', text)))


def load_until(endpoint: str, body: bytes, total: int) -> int:
    """Drive the service with wrk until it has answered at least `total` hook calls; returns the count."""
    rate = 100.0
    while (done := served(endpoint)) < total:
        rate = max(wrk(endpoint, body, seconds=min(60.0, (total - done) / rate + 1))["requests_per_s"], 1.0)
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


def paced(endpoint: str, body: bytes, rate: float, seconds: float = 8.0) -> dict[str, Any]:
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
                http.post(endpoint, content=body, headers={"Content-Type": "application/json"})
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


class Progress:
    """Says what runs now and about how long is left (each step's seconds are known in advance)."""

    def __init__(self, steps: list[tuple[str, float]]) -> None:
        self.steps, self.done, self.started = steps, 0, time.monotonic()

    def next(self) -> None:
        name, _ = self.steps[self.done]
        left = sum(seconds for _, seconds in self.steps[self.done:])
        print(f"[{self.done + 1}/{len(self.steps)}] {name}  (about {left / 60:.1f} min left, "
              f"{time.monotonic() - self.started:.0f} s so far)", flush=True)
        self.done += 1


def with_ratio(figures: dict[str, Any], bare: dict[str, Any]) -> dict[str, Any]:
    return figures | {"share_of_bare_throughput": round(figures["requests_per_s"] / bare["requests_per_s"], 3)}


def service_figures(folder: str, *, long: bool) -> dict[str, Any]:
    p01, hundred, thousand = body_with(None), body_with(100), body_with(1000)
    steps: list[tuple[str, float]] = [
             ("bare FastAPI endpoint", 12), ("HealthChain trivial handler (installs once)", 14),
             ("P01, 1 worker, new data each call, cache off", 12), ("P01, 1 worker, same body, cache on", 12),
             ("100 Observations", 10), ("1,000 Observations", 10), ("1,000 Observations one at a time", 7),
             ("P01 at half the maximum rate", 10), ("P01, 2 workers, new data, cache off", 14),
             ("P01, 4 workers, new data, cache off", 16)]
    if long:
        steps.append(("memory over 100,000 calls", 900))
    progress = Progress(steps)
    out: dict[str, Any] = {"cores": os.cpu_count()}
    progress.next()
    with server("bare", folder) as (url, _):
        bare = out["bare_endpoint"] = wrk(url, p01)
    progress.next()
    with server("peer", folder) as (url, _):
        out["healthchain_trivial_handler"] = with_ratio(wrk(url, p01), bare) if url else None
    with server("cds", folder) as (url, _):
        progress.next()
        out["patient_view_p01_new_data"] = with_ratio(wrk(url, p01, new_data=True), bare)
        progress.next()
        out["patient_view_p01_repeated_cache_off"] = with_ratio(wrk(url, p01, seconds=3), bare)
        progress.next()
        out["prefetch_100_observations"] = with_ratio(wrk(url, hundred, seconds=6, new_data=True), bare)
        progress.next()
        out["prefetch_1000_observations"] = with_ratio(wrk(url, thousand, seconds=6, new_data=True), bare)
        progress.next()
        out["prefetch_1000_observations_one_at_a_time"] = wrk(url, thousand, connections=1, seconds=5)
        progress.next()
        half = out["patient_view_p01_new_data"]["requests_per_s"] / 2
        out["patient_view_p01_at_half_max_rate"] = paced(url, p01, half)
    with server("cds", folder, cache=256) as (url, _):
        out["patient_view_p01_repeated_cache_on"] = with_ratio(wrk(url, p01, seconds=6), bare)
    for workers in (2, 4):
        progress.next()
        with server("cds", folder, workers=workers) as (url, _):
            out[f"patient_view_p01_new_data_{workers}_workers"] = with_ratio(wrk(url, p01, new_data=True), bare)
    if long:
        progress.next()
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


ROWS = [("bare_endpoint", "bare FastAPI endpoint (parses the body, no cards)"),
        ("healthchain_trivial_handler", "HealthChain 0.16.1, one fixed card"),
        ("patient_view_p01_new_data", "hipflex-cds P01, new data each call, cache off"),
        ("patient_view_p01_repeated_cache_off", "hipflex-cds P01, same body, cache off"),
        ("patient_view_p01_repeated_cache_on", "hipflex-cds P01, same body, cache on"),
        ("patient_view_p01_new_data_2_workers", "hipflex-cds P01, new data, 2 workers"),
        ("patient_view_p01_new_data_4_workers", "hipflex-cds P01, new data, 4 workers"),
        ("prefetch_100_observations", "100 Observations, new data"),
        ("prefetch_1000_observations", "1,000 Observations, new data"),
        ("prefetch_1000_observations_one_at_a_time", "1,000 Observations, one call at a time")]


def summary(results: dict[str, Any]) -> str:
    service, engine = results["service"], results["engine"]
    bare = service["bare_endpoint"]
    lines = [f"| {'load':<52} | {'req/s':>7} | {'p50 ms':>7} | {'p99 ms':>7} | {'x bare':>6} |",
             f"|{'-' * 54}|{'-' * 9}:|{'-' * 9}:|{'-' * 9}:|{'-' * 8}:|"]
    for key, name in ROWS:
        f = service.get(key)
        if f:
            lines.append(f"| {name:<52} | {f['requests_per_s']:>7,.0f} | {f['p50_ms']:>7.2f} | {f['p99_ms']:>7.2f} | "
                         f"{f['requests_per_s'] / bare['requests_per_s']:>6.3f} |")
    one, peer = service["patient_view_p01_new_data"], service.get("healthchain_trivial_handler")
    half = service["patient_view_p01_at_half_max_rate"]
    two = service["patient_view_p01_new_data_2_workers"]["requests_per_s"] / one["requests_per_s"]
    thousand = service["prefetch_1000_observations_one_at_a_time"]
    lines += ["", "Targets (cache off, new data each call):",
              f"- P01, one worker: {one['share_of_bare_throughput']:.1%} of bare (target >= 25 %) "
              + (f"and x{one['requests_per_s'] / peer['requests_per_s']:.2f} of HealthChain (target > 1)" if peer
                 else "(HealthChain not available)"),
              f"- P01 at half the max rate ({half['rate_per_s']}/s): p99 {half['p99_ms']} ms (target <= 10 ms), "
              f"p50 {half['p50_ms']} ms",
              f"- 2 workers: x{two:.2f} of one (target >= 1.6 where the machine has >= 4 cores; nproc = "
              f"{service['cores']})",
              f"- 1,000-Observation call one at a time: p50 {thousand['p50_ms']} ms (target <= 50 ms)"]
    memory = service.get("memory")
    if memory:
        lines.append(f"- RSS after {memory['requests_first']:,} calls {memory['rss_mb_first']} MB, after "
                     f"{memory['requests_second']:,} {memory['rss_mb_second']} MB (growth {memory['growth']:.1%}, "
                     "target < 5 %)")
    lines += [f"engine: durable_rules {engine['durable_rules_us_per_evaluation']} us vs plain Python "
              f"{engine['plain_python_us_per_evaluation']} us per evaluation "
              f"(x{engine['durable_over_plain_python']}); 1,000 rules x{engine['rule_scaling']['1000_over_10_rules']} "
              f"of 10; 1,000 facts x{engine['fact_scaling']['1000_over_10_facts']} of 10",
              f"validation: {engine['validation_us_per_observation']} us per Observation"]
    return "\n".join(lines)


def main(long: bool) -> None:
    with tempfile.TemporaryDirectory() as folder:
        print("engine figures (about 1 min)", flush=True)
        results: dict[str, Any] = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "machine": machine(),
                   "engine": bench_engine.run(), "service": service_figures(folder, long=long)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{results['date'][:10]}-{results['machine']['host']}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(summary(results))
    print(f"saved {path.relative_to(PROJECT_ROOT)}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(sys.argv[2], int(sys.argv[3]))
    else:
        main(long="--long" in sys.argv)
