"""Rationalize texts with a local Hugging Face causal LM or a fairseq translation checkpoint.

Also installed as the console command ``rationalize``; ``python scripts/rationalize.py --help``
explains every flag. Examples:

    python scripts/rationalize.py --model path/to/gpt2 --text "The Supreme Court on" --generate 8
    python scripts/rationalize.py --model path/to/gpt2 --input prompts.txt --out out.jsonl
    torchrun --nproc_per_node 2 scripts/rationalize.py --model path/to/gpt2 \\
        --input prompts.txt --out out.jsonl    # sharded: one merged out.jsonl
"""

from sequential_rationales_integrations.cli import run_program
from sequential_rationales_integrations.rationalize_cli import main

if __name__ == "__main__":
    run_program(main)
