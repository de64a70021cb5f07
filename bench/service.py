"""`make bench`: the service under load, beside a bare FastAPI endpoint and the Python peer (HealthChain's
trivial patient-view handler), all measured in the same run.

Every server runs as a subprocess with the same uvicorn settings on loopback; the service with its
production path (`cds.web.app.serve`: JSON logs, SQLite store, card records), with the decision cache off
and new Observation ids in every call unless a line says otherwise (a benchmark that repeats one body would
measure only the caches). wrk drives them. Every figure is printed with its ratio to the bare endpoint and
its target; nothing is asserted (the machine is shared). Beside them: the in-process decide of this checkout and
of the code as it was before the performance work (a pinned copy, alternated in the same run), the steps around
the decision (bench/around.py), the engine figures (bench/engine.py) and population runs of 10,000 and 100,000
patients on one worker. `make bench` takes about 10 minutes and prints what runs now and how long is left;
`make bench-long` adds the 100,000-call memory run. Results are saved under bench/results/.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from bench import engine as bench_engine
from bench import instructions as bench_instructions
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


def with_new_ids(body: bytes, call: int) -> bytes:
    """The body with every P01 Observation id made this call's own, as the wrk script does for new data."""
    return body.replace(b'"id": "p01-', b'"id": "p01-%d-' % call)


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


def paced(endpoint: str, body: bytes, rate: float, seconds: float = 8.0, connections: int = 8) -> dict[str, Any]:
    """Latency at a fixed request rate (an EHR's steady load), new Observation ids in every call. Open loop: each
    call is due at its own moment whatever the earlier ones did, and its latency counts from that moment (a
    call that had to wait for a free connection counts its wait). One asyncio client on raw keep-alive
    connections: a Python HTTP client in threads (httpx, before) added its own GIL waits to every figure."""
    return asyncio.run(_paced(endpoint, body, rate, seconds, connections))


async def _paced(endpoint: str, body: bytes, rate: float, seconds: float, connections: int) -> dict[str, Any]:
    url = httpx.URL(endpoint)
    host, port = url.host, url.port or 80
    free: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(connections):
        free.put_nowait(await asyncio.open_connection(host, port))
    latencies: list[float] = []
    errors = 0

    async def call(index: int, due: float) -> None:
        nonlocal errors
        content = with_new_ids(body, index)
        reader, writer = await free.get()
        writer.write(f"POST {url.raw_path.decode()} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {len(content)}\r\n\r\n".encode() + content)
        head = await reader.readuntil(b"\r\n\r\n")
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        await reader.readexactly(int(length.group(1)) if length else 0)
        latencies.append((time.perf_counter() - due) * 1000)
        errors += not head.startswith(b"HTTP/1.1 200")
        free.put_nowait((reader, writer))

    start, calls = time.perf_counter() + 0.05, []
    for index in range(int(seconds * rate)):
        due = start + index / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        calls.append(asyncio.create_task(call(index, due)))
    await asyncio.gather(*calls)
    while not free.empty():
        free.get_nowait()[1].close()
    latencies.sort()
    return {"rate_per_s": round(rate, 1), "p50_ms": round(statistics.median(latencies), 2),
            "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 2), "requests": len(latencies),
            "errors": errors}


ROUNDS = 3


def head_to_head(bare_url: str, peer_url: str, url: str, body: bytes) -> tuple[dict[str, Any], dict[str, Any] | None,
                                                                              dict[str, Any]]:
    """The bare endpoint, HealthChain and the service (new data each call) measured in turn, ROUNDS times, the
    best round of each kept. This VM's speed changes from one minute to the next (and not alike for every
    kind of work), so figures taken minutes apart gave ratios of its moods: 0.032 and 0.067 x bare for the same
    code, an hour apart."""
    rounds: dict[str, list[dict[str, Any]]] = {"bare": [], "peer": [], "cds": []}
    for _ in range(ROUNDS):
        rounds["bare"].append(wrk(bare_url, body, seconds=5))
        if peer_url:
            rounds["peer"].append(wrk(peer_url, body, seconds=5))
        rounds["cds"].append(wrk(url, body, seconds=5, new_data=True))
    best = {name: max(runs, key=lambda r: r["requests_per_s"]) | {"rounds": [r["requests_per_s"] for r in runs]}
            for name, runs in rounds.items() if runs}
    return best["bare"], best.get("peer"), best["cds"]


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
             ("bare endpoint, HealthChain and P01 (new data, cache off) in turn, three rounds", 60),
             ("P01, 1 worker, same body, cache on", 12),
             ("100 Observations", 10), ("1,000 Observations", 10), ("1,000 Observations one at a time", 7),
             ("P01 at half the maximum rate", 10), ("P01, 2 workers, new data, cache off", 14),
             ("P01, 4 workers, new data, cache off", 16)]
    if long:
        steps.append(("memory over 100,000 calls", 900))
    progress = Progress(steps)
    out: dict[str, Any] = {"cores": os.cpu_count()}
    progress.next()
    with server("bare", folder) as (bare_url, _), server("peer", folder) as (peer_url, _), \
            server("cds", folder) as (url, _):
        bare, peer, one = head_to_head(bare_url, peer_url, url, p01)
        out["bare_endpoint"] = bare
        out["healthchain_trivial_handler"] = with_ratio(peer, bare) if peer else None
        out["patient_view_p01_new_data"] = with_ratio(one, bare)
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

# The code as it was when the performance work began (issue 25's "today"): its in-process figure is measured
# from a pinned copy in every bench run, beside this checkout's, so the ratio comes from one run.
BASELINE_COMMIT = "babd2250c37f24e2dedfc9929ec2bd807f98036c"


def pinned_copy(folder: Path) -> Path | None:
    """BASELINE_COMMIT's tree under `folder` (git archive), or None when this checkout cannot give it."""
    target = folder / "baseline"
    target.mkdir()
    archive = subprocess.run(["git", "-C", str(PROJECT_ROOT), "archive", BASELINE_COMMIT], capture_output=True,
                             check=False)
    if archive.returncode != 0:
        print(f"  (today's code is not in this checkout: {archive.stderr.decode().strip()[:200]})", flush=True)
        return None
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


def figures_from(arguments: list[str], code: Path) -> dict[str, Any]:
    """The JSON a bench script prints, run in its own process with `code` (a checkout) first on the path."""
    done = subprocess.run([sys.executable, *arguments], cwd=code, env=os.environ | {"PYTHONPATH": str(code)},
                          capture_output=True, text=True, check=True)
    figures: dict[str, Any] = json.loads(done.stdout)
    return figures


def decide_figures(code: Path, calls: int = 400) -> dict[str, Any]:
    """bench/decide.py on `code` (this checkout's script, that checkout's package)."""
    return figures_from([str(PROJECT_ROOT / "bench" / "decide.py"), str(calls)], code)


def in_process_figures(rounds: int = 3) -> dict[str, Any]:
    """This checkout's decide and today's (the pinned copy), alternated so both see the same machine; the
    fastest round of each (the least disturbed by whatever else the machine did)."""
    with tempfile.TemporaryDirectory() as folder:
        baseline = pinned_copy(Path(folder))
        now, today = [], []
        for _ in range(rounds):
            now.append(decide_figures(PROJECT_ROOT))
            if baseline is not None:
                today.append(decide_figures(baseline))
        print("instructions per decide, this checkout and today's, under callgrind (about 2 min)", flush=True)
        counted = bench_instructions.figures(baseline)
    best_now = min(now, key=lambda f: f["ms_per_decide"])
    out: dict[str, Any] = {"now": best_now, "rounds_ms_now": [f["ms_per_decide"] for f in now],
                           "instructions": counted}
    if today:
        best_today = min(today, key=lambda f: f["ms_per_decide"])
        out |= {"today": best_today, "rounds_ms_today": [f["ms_per_decide"] for f in today],
                "now_over_today": round(best_now["ms_per_decide"] / best_today["ms_per_decide"], 3),
                "baseline_commit": BASELINE_COMMIT}
    return out


def summary(results: dict[str, Any]) -> str:
    service, engine = results["service"], results["engine"]
    bare, peer = service["bare_endpoint"], service.get("healthchain_trivial_handler")
    lines = [f"| {'load':<52} | {'req/s':>7} | {'p50 ms':>7} | {'p99 ms':>7} | {'x bare':>6} | {'x HC':>6} |",
             f"|{'-' * 54}|{'-' * 9}:|{'-' * 9}:|{'-' * 9}:|{'-' * 8}:|{'-' * 8}:|"]
    for key, name in ROWS:
        f = service.get(key)
        if f:
            versus_peer = f"{f['requests_per_s'] / peer['requests_per_s']:>6.3f}" if peer else f"{'-':>6}"
            lines.append(f"| {name:<52} | {f['requests_per_s']:>7,.0f} | {f['p50_ms']:>7.2f} | {f['p99_ms']:>7.2f} | "
                         f"{f['requests_per_s'] / bare['requests_per_s']:>6.3f} | {versus_peer} |")
    failed = [name for key, name in ROWS if (service.get(key) or {}).get("errors")]
    if failed:
        lines.append(f"WARNING: non-2xx answers in: {', '.join(failed)} (those figures measure errors)")
    lines += ["", *in_process_table(results["in_process"]), "", *around_lines(results["around"]),
              "", *targets(results)]
    lines += ["", f"engine: durable_rules {engine['durable_rules_us_per_evaluation']} us vs the plain-Python reference "
              f"{engine['plain_python_us_per_evaluation']} us per evaluation (x{engine['durable_over_plain_python']}); "
              f"1,000 rules x{engine['rule_scaling']['1000_over_10_rules']} of 10; 1,000 facts "
              f"x{engine['fact_scaling']['1000_over_10_facts']} of 10; validation "
              f"{engine['validation_us_per_observation']} us per Observation"]
    return "\n".join(lines)


def in_process_table(figures: dict[str, Any]) -> list[str]:
    """Issue 25's table: where an in-process P01 decide goes, today's code beside this checkout's."""
    now, today = figures["now"], figures.get("today")
    lines = [f"In-process Pipeline.decide on P01 (new ids, cache off; best of {len(figures['rounds_ms_now'])} "
             f"rounds): now {now['ms_per_decide']} ms"
             + (f", today ({BASELINE_COMMIT[:7]}) {today['ms_per_decide']} ms: x{figures['now_over_today']}"
                if today else ", today's code not available"), "",
             f"| {'part':<40} | {'today':>7} | {'now':>7} | {'now ms':>7} |", f"|{'-' * 42}|{'-' * 9}:|{'-' * 9}:|"
             f"{'-' * 9}:|"]
    for part, share in now["breakdown"].items():
        before = f"{today['breakdown'].get(part, 0):>7.0%}" if today else f"{'-':>7}"
        lines.append(f"| {part:<40} | {before} | {share:>7.0%} | {share * now['ms_per_decide']:>7.2f} |")
    return [*lines, "", instructions_line(figures.get("instructions") or {})]


def instructions_line(counted: dict[str, Any]) -> str:
    if not counted:
        return "Instructions per decide: not counted (valgrind missing)"
    line = (f"Instructions per decide (callgrind, {counted['calls']} decides; the same in any minute): "
            f"now {counted['now']:,}")
    if "today" in counted:
        line += f", today ({BASELINE_COMMIT[:7]}) {counted['today']:,}: x{counted['now_over_today']}"
    return line


def around_lines(figures: dict[str, Any]) -> list[str]:
    steps = "; ".join(f"{name} {ms:.2f}" for name, ms in figures["steps_ms"].items())
    return [f"Around the decision (in-process ASGI call, one at a time): {figures['ms_per_call']} ms a call, of which "
            f"deciding {figures['ms_deciding']} ms and around it {figures['ms_around_the_decision']} ms "
            f"(target < 1 ms): {steps}"]


# what the pinned copy's in-process decide took when the VM ran at its usual speed (bench/results/2026-12-02T*)
REFERENCE_SPEED = "2.2-2.9 ms in the six runs of 2 December"


def targets(results: dict[str, Any]) -> list[str]:
    service, in_process, population = results["service"], results["in_process"], results.get("population")
    one, bare = service["patient_view_p01_new_data"], service["bare_endpoint"]
    peer = service.get("healthchain_trivial_handler")
    half = service["patient_view_p01_at_half_max_rate"]
    thousand = service["prefetch_1000_observations_one_at_a_time"]
    lines = ["Targets (issue 25; cache off, new data each call):",
             f"- P01, one worker: x{one['requests_per_s'] / bare['requests_per_s']:.3f} of bare (target >= 0.08)"
             + (f" and x{one['requests_per_s'] / peer['requests_per_s']:.3f} of HealthChain (target >= 0.4)" if peer
                else " (HealthChain not available)"),
             f"- in-process decide: x{in_process['now_over_today']} of today's time (target <= 0.40)"
             + (f", x{in_process['instructions']['now_over_today']} of its instructions"
                if "now_over_today" in (in_process.get("instructions") or {}) else "")
             if "now_over_today" in in_process else "- in-process decide: today's code not available",
             f"- P01 at half the max rate ({half['rate_per_s']}/s): p99 {half['p99_ms']} ms (target <= 10 ms), "
             f"p50 {half['p50_ms']} ms",
             f"- 1,000-Observation call one at a time: p50 {thousand['p50_ms']} ms, p99 {thousand['p99_ms']} ms "
             "(target <= 25 ms)"]
    if population:
        rates = ", ".join(f"{r['patients']:,}: {r['patients_per_second']:,.0f}/s" for r in population["runs"])
        lines.append(f"- population, one worker: {rates} (target >= 1,500/s); peak RSS "
                     f"{population['rss_mb_10k']} -> {population['rss_mb_100k']} MB "
                     f"({population['rss_growth']:+.1%}, target within +-15 %)")
    if "today" in in_process:
        lines.append(f"- machine speed: the pinned {in_process['baseline_commit'][:7]}'s decide took "
                     f"{in_process['today']['ms_per_decide']} ms in this run ({REFERENCE_SPEED}); the p99, "
                     "1,000-Observation and population targets have no same-run baseline, so read them against it")
    memory = service.get("memory")
    if memory:
        lines.append(f"- RSS after {memory['requests_first']:,} calls {memory['rss_mb_first']} MB, after "
                     f"{memory['requests_second']:,} {memory['rss_mb_second']} MB (growth {memory['growth']:.1%}, "
                     "target < 5 %)")
    return lines


def population_figures() -> dict[str, Any]:
    """Patients per second and peak worker memory, one worker, 10,000 and 100,000 synthetic patients."""
    from bench.population import figures

    with tempfile.TemporaryDirectory() as folder:
        runs = [figures(n, 1, Path(folder)) for n in (10_000, 100_000)]
    small, large = (max(r["worker_peak_rss_mb"]) for r in runs)
    return {"runs": runs, "rss_mb_10k": small, "rss_mb_100k": large, "rss_growth": round(large / small - 1, 4)}


def main(long: bool) -> None:
    with tempfile.TemporaryDirectory() as folder:
        print("engine figures (about 1 min)", flush=True)
        engine = bench_engine.run()
        print("in-process decide, this checkout and today's, alternated (about 1 min)", flush=True)
        in_process = in_process_figures()
        print("around the decision, in-process (about 20 s)", flush=True)
        around = around_figures()
        results: dict[str, Any] = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "machine": machine(),
                                   "engine": engine, "in_process": in_process, "around": around,
                                   "service": service_figures(folder, long=long)}
    print("population: 10,000 then 100,000 patients on one worker (about 4 min)", flush=True)
    results["population"] = population_figures()
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = results["date"][:16].replace(":", "")  # one file per run: the same day's runs differ by the hour
    path = RESULTS / f"{stamp}-{results['machine']['host']}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(summary(results))
    print(f"saved {path.relative_to(PROJECT_ROOT)}")


def around_figures() -> dict[str, Any]:
    """bench/around.py in its own process (it configures the service through the environment)."""
    return figures_from(["-m", "bench.around"], PROJECT_ROOT)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(sys.argv[2], int(sys.argv[3]))
    else:
        main(long="--long" in sys.argv)
