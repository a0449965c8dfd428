"""`cassava bench`: a load generator for any V2 endpoint of this model, and the in-process limit.

    images     synthetic leaf-like JPEGs (the tests use them too), or the user's image files
    requests   the requests a run cycles through, built before the clock starts
    drivers    closed-loop (concurrency) and open-loop (arrival rate) REST and gRPC drivers on one
               asyncio loop (served runs), and the latency-vs-rate sweep
    inprocess  `Classifier.classify_images` in a loop: the pipeline's limit, no server
    report     per-request records, the report summarised from them, and a rate curve's capacity
               within a latency objective
    resources  CPU and memory of the generator and of a server's process tree
    server     a server of the bench's own, with its cold start

Requests are built before the clock starts (JSON bodies for REST, InferInputs for gRPC), so the
generator spends its CPU on the sockets rather than on `json.dumps`; its own CPU use is reported all
the same, because on a small machine a saturated client looks exactly like a slow server.

Nothing here imports MLServer: the drivers import tritonclient's gRPC stubs, and the two register the
same protobuf names (see `cassava.contract`). The matrix behind `make bench` is `benchmarks/`, at the
repository root and outside the wheel.
"""

from cassava.bench.drivers import (
    ERROR_PAUSE_S,
    HTTPStatusError,
    LoadSpec,
    arrival_times,
    error_kind,
    open_loop,
    run_load,
    run_sweep,
)
from cassava.bench.images import generate_images, leaf_pixels, load_images
from cassava.bench.inprocess import run_in_process
from cassava.bench.report import (
    DEFAULT_SLO_MS,
    DROP_KINDS,
    PERCENTILES,
    SLO_PERCENTILE,
    Arrivals,
    BenchReport,
    OpenLoop,
    RatePoint,
    Record,
    SloCapacity,
    Tick,
    Window,
    build_report,
    latency_stats,
    meets_slo,
    past_the_knee,
    rss_growth_pct,
    slo_capacity,
)
from cassava.bench.requests import (
    MAX_DISTINCT_REQUESTS,
    MAX_DISTINCT_TENSOR_REQUESTS,
    Encoding,
    Mode,
    Prepared,
    batches_of,
    build_request,
    prepare_requests,
    seed_request_json,
)
from cassava.bench.resources import ProcessTree
from cassava.bench.server import ServerConfig, StartedServer, start_server

__all__ = [
    "DEFAULT_SLO_MS",
    "DROP_KINDS",
    "ERROR_PAUSE_S",
    "MAX_DISTINCT_REQUESTS",
    "MAX_DISTINCT_TENSOR_REQUESTS",
    "PERCENTILES",
    "SLO_PERCENTILE",
    "Arrivals",
    "BenchReport",
    "Encoding",
    "HTTPStatusError",
    "LoadSpec",
    "Mode",
    "OpenLoop",
    "Prepared",
    "ProcessTree",
    "RatePoint",
    "Record",
    "ServerConfig",
    "SloCapacity",
    "StartedServer",
    "Tick",
    "Window",
    "arrival_times",
    "batches_of",
    "build_report",
    "build_request",
    "error_kind",
    "generate_images",
    "latency_stats",
    "leaf_pixels",
    "load_images",
    "meets_slo",
    "open_loop",
    "past_the_knee",
    "prepare_requests",
    "rss_growth_pct",
    "run_in_process",
    "run_load",
    "run_sweep",
    "seed_request_json",
    "slo_capacity",
    "start_server",
]
