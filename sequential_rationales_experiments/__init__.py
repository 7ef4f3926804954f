"""What serves the paper's experiments: synthetic tasks, IWSLT14 preparation, distractor and
alignment sets, the analogy and Lambada example builders, model loading for the runners, table
and figure I/O, and the one resumable dataset runner every runner uses.

The command-line programs behind ``huggingface/``, ``fairseq/``, ``analysis/`` and
``scripts/`` live in :mod:`.commands`; those folders hold thin entry points.
"""
