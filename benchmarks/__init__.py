"""The benchmark matrix behind `make bench`: every figure of docs/performance.md, measured in one run.

    python -m benchmarks --model DIR [--out docs/performance.md] [--quick]   # or $CASSAVA_BENCH_MODEL
    python -m benchmarks --render docs/performance.json                      # rewrite the .md only

Run from the repository root; it is part of the repository, not of the wheel, and drives the load
generator the wheel ships (`cassava.bench`). One run measures, on the same generated JPEGs:
decode/preprocess speed and parity; the in-process limit (`Classifier.classify_images`) per backend at
batch 1 and 16; the seed's request (float32 JSON, batch 16); image bytes over REST and gRPC at
concurrency 1, 8 and 32 with 0/1/2 parallel workers, with and without adaptive batching; cold start
and resident memory per backend; the open-loop latency-vs-rate sweep (p99 against a 250 ms objective)
on the best backend's default server. Every figure goes into docs/performance.json first and the Markdown
is rendered from that file, so nothing in it is typed by hand.

    plan         what runs: images, timing windows, targets, the server plan
    environment  the machine and library versions
    decode       decode and preprocess speed and parity (child process: imports TensorFlow)
    measure      the model copy, in-process, model-only and served runs; `run_matrix`
    control      the paired rounds' control: stock `mlserver start` with control_runtime.py, the
                 least runtime around the same pipeline
    analysis     targets met or missed, and this run's pick of defaults
    report       the Markdown page (its prose: performance_notes.md) and the chart
"""
