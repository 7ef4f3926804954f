"""Fetch the three data files of the GPT-2 experiments into ``data/`` (git-ignored).

| file | source |
|---|---|
| ``questions-words.txt`` | Mikolov et al. (2013) analogies, as shipped with gensim's test data |
| ``annotated_lambada.json`` | the paper's repository (keyonvafa/sequential-rationales) |
| ``analogy_templates.json`` | the 14 templates of the paper's analogy experiment, read out of |
|  | ``huggingface/data_utils.py`` of the paper's repository (the original keeps them in code) |

Without network access, copy the files from a local folder instead, e.g. the shared data
folder next to the project: ``python scripts/download_data.py --source ../shared/data``.
Existing files are kept unless ``--force``. Every file is checked after it is fetched.

    python scripts/download_data.py                 # download
    python scripts/download_data.py --source DIR    # copy from DIR
"""

from sequential_rationales_experiments.cli import run_program
from sequential_rationales_experiments.commands.download_data import main

if __name__ == "__main__":
    run_program(main)
