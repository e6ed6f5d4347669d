"""`smc-prune MODEL_ID_OR_DIR --method omp --sparsity 0.5 --output DIR`: one-shot pruning of a checkpoint.

Options are the fields of `SparsityConfig` (what to prune) and `PruneCheckpointArguments` (how to read,
write and publish), read by `HfArgumentParser`; `--flag_name` and `--flag-name` both work.
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
from typing import Optional, Sequence

from transformers import HfArgumentParser

from ..config import SparsityConfig
from ..io.folders import partial_dir
from ..pruning.checkpoint_pruning import PruneCheckpointArguments, prune_checkpoint

EXAMPLES = """examples:
  smc-prune FacebookAI/roberta-large --method omp --sparsity 0.5 --distribution global --output roberta-omp50
  smc-prune ./big-model --method omp --sparsity 0.7 --streaming --output big-omp70 --compress
  smc-prune ./roberta-csqa --method snip --sparsity 0.5 --calibration-task csqa --calibration-samples 128 --output out
  smc-prune ./gpt --method obert --sparsity 0.5 --calibration-file calib.jsonl --output out --push-to-hub me/gpt-obert50
"""


def build_parser() -> HfArgumentParser:
    import argparse

    parser = HfArgumentParser(
        (SparsityConfig, PruneCheckpointArguments), prog="smc-prune", epilog=EXAMPLES,
        description="Prune a transformers checkpoint one-shot and save it as a sparse checkpoint loadable by "
        "from_pretrained (masks, config block and model card included).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", metavar="MODEL_ID_OR_DIR", help="Hub model id or local save_pretrained folder.")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        config, options, extra = parser.parse_args_into_dataclasses(args=argv)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    kwargs = dataclasses.asdict(options)
    output = kwargs.pop("output")
    command = shlex.join(["smc-prune", *argv])
    try:
        report = prune_checkpoint(extra.model, output, config, command=command, **kwargs)
    except KeyboardInterrupt:
        hint = " (run the same command again to resume)" if options.streaming else ""
        print(f"smc-prune: interrupted; nothing was written to {output}{hint}", file=sys.stderr)
        if options.streaming:
            print(f"smc-prune: partial work is in {partial_dir(output)}", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, FileExistsError, KeyError, ImportError, OSError) as err:
        print(f"smc-prune: error: {err}", file=sys.stderr)
        return 1
    print(report.to_markdown())
    print(f"\nsaved to {output}" + (f" and pushed to {options.push_to_hub}" if options.push_to_hub else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
