"""Language models: distillation as it is done for LLMs, small enough to watch on a CPU.

- ``corpus``: text that needs no download (Python's help texts; Debian's fortunes and
  Tang/Song poems when installed), a fixed seeded split, a character vocabulary;
- ``models``: nanoGPT-like decoder-only transformers and a Bengio-style MLP student;
- ``losses``: forward KL, reverse KL, generalised JSD, top-k soft targets, hidden matching;
- ``methods``: the registry the CLI and the page are built from;
- ``train``: cached teachers, ``LMTrainer`` (events), evaluation and sampling;
- ``jobs``: ``LMJob`` to run an ``LMTrainer`` in the app's ``JobManager``.
"""
