"""The performance benchmark: ``python -m benchmarks`` (``make bench``), outside the engine.

It measures, side by side in one run, what the engine costs against two references:

* **the floor**: the same student trained alone on the same data with a minimal loop
  (index-slice batches, forward, cross-entropy, backward, Adam) — no teacher, no extra loss;
* **the conventional loop**, as public KD code bases write it: a ``DataLoader`` over the
  dataset and a teacher forward pass in every step, plus the KD loss.

Every method of the registry is run through the real ``Trainer`` on ``mnist-mini`` with the
default pair and on CIFAR-10-shaped data (random tensors of the real shape: no download)
with the ResNet pair. Measurements are interleaved (floor, method, floor, method, …) and
repeated, and every method's time is divided by the mean of the two floor measurements
around it, so the ratios survive a noisy shared machine. Then: the live app's cost (a Lab
job polled and redrawn like the page does, against the same run headless), the latency of
the interactive redraws, the peak memory of a Lab run and of the app with ten idle
sessions, and the machine the figures came from.

Teachers here have random weights: speed does not depend on the weights, and the benchmark
needs no trained teacher (except the full mode's app measurements, which use the app's
cached teacher, trained once if missing). ``--quick`` runs a few steps of 2-3 methods so the
test suite can keep the benchmark working; its figures mean little.

Parts: ``benchmarks.engine`` (training throughput), ``benchmarks.app`` (the live app,
redraws, memory), ``benchmarks.report`` (the report and targets); ``benchmarks.common``
what they share. The engine never imports streamlit; the app measurements run it in child
processes.
"""
