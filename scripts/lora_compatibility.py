"""LoRA compatibility fine-tuning on Majority Class (CPU, a few minutes): a standard tiny Llama,
then full fine-tuning with word dropout, LoRA with word dropout, and LoRA without it, compared
by the label's calibration on partial inputs. ``--help`` lists the options.

    python scripts/lora_compatibility.py --out outputs/lora
"""

from sequential_rationales_experiments.cli import run_program
from sequential_rationales_experiments.commands.lora_compatibility import main

if __name__ == "__main__":
    run_program(main)
