# The compact template search (template_proxy.py; Nekrasov et al., WACV 2020) with latency where the model
# will run: each candidate (MobileNetV2 stem + template decoder) is exported to ONNX and timed by ONNX Runtime's
# CPU execution provider, one thread, at 512x512, once per distinct arch (densenas/latency.py), and MnasNet's
# soft constraint (Tan et al., CVPR 2019, Eq. 2: reward = metric * (latency / target) ** -0.07) scalarises it.
# The Pareto front (metric vs ORT latency) is in leaderboard.md and pareto.png; the same candidates timed by
# eager PyTorch: benchmarks/bench_deploy.py --history work_dirs/template_ort_proxy/history.sqlite.
# FBNet's per-op lookup table instead of timing each whole candidate: objective.latency_table="lut.json".
# python tools/search.py configs/search/template_ort_proxy.py
_base_ = ["./template_proxy.py"]
work_dir = "work_dirs/template_ort_proxy"
# target: the median ORT latency of 30 sampled template archs at 512x512, one thread, on a 2-core AMD EPYC
# (28.5 ms, benchmarks/bench_deploy.py; docs/deploy.md). No parameter limit: latency is the cost here.
# workers="auto" is 1 here: a latency timed while another worker trains would include that worker's load.
objective = dict(_delete_=True, cost="latency_ms", runtime="onnxruntime", latency_threads=1,
                 latency_size=(512, 512), latency_repeats=10, latency_warmup=3, target=28.5)
