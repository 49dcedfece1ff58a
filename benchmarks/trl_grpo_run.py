"""One TRL `GRPOTrainer` run in a process of its own, for `benchmarks/vs_trl.py` (which starts it and
reads its peak RSS): the configuration that script's docstring describes, step times from a
`TrainerCallback`, written with the library versions as JSON to --child-out.

    python benchmarks/trl_grpo_run.py --model-dir DIR --child-out r.json --steps 12 --threads 2 --new-tokens 16
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from vs_trl import BATCH_PROMPTS, BETA, GROUP_SIZE, INSTALL_HINT, LR, REPO


def import_trl(trl_path: str | None, allow_vllm: bool):
    """Import trl, from the environment or from `trl_path` appended to sys.path (so that the
    environment's torch/transformers win over any copy in that folder)."""
    if trl_path:
        sys.path.append(trl_path)
    if not allow_vllm:
        sys.modules["vllm"] = None  # importlib.util.find_spec("vllm") -> None: TRL sees no vllm
    try:
        import trl  # noqa: F401
    except ImportError as err:
        raise SystemExit(f"{INSTALL_HINT}\n({err})")
    return trl


def run(args) -> int:
    """One TRL GRPOTrainer run (in its own process); writes step times and versions to --child-out."""
    import torch

    torch.set_num_threads(args.threads)
    trl = import_trl(args.trl_path, args.trl_allow_vllm)
    import datasets
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    sys.path.insert(0, str(REPO))
    from experiments.tasks import TaskConfig, make_task

    task = make_task(TaskConfig())  # the harness's default task: task.name=arithmetic
    examples = task.examples("train")
    dataset = datasets.Dataset.from_dict({"prompt": [e.prompt for e in examples],
                                          "answer": [e.answer for e in examples],
                                          "idx": list(range(len(examples)))})
    lengths: list[float] = []

    def correctness(prompts, completions, idx, **_):
        return [task.check(c, examples[i]) for c, i in zip(completions, idx)]

    model_dir = args.model_dir
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:  # as the harness's load_policy
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)

    step_times: dict[int, float] = {}

    class StepTimer(TrainerCallback):
        def on_step_begin(self, _args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, _args, state, control, **kw):
            step_times[state.global_step] = time.perf_counter() - self.t0

        def on_log(self, _args, state, control, logs=None, **kw):
            if logs and "completions/mean_length" in logs:
                lengths.append(logs["completions/mean_length"])

    micro = args.micro_batch or BATCH_PROMPTS * GROUP_SIZE  # rollouts per forward/backward
    accumulate = BATCH_PROMPTS * GROUP_SIZE // micro  # micro-batches per generation = per optimizer step
    with tempfile.TemporaryDirectory(prefix="vs-trl-out-") as out_dir:
        config = GRPOConfig(
            output_dir=out_dir, max_steps=args.steps, seed=0, use_cpu=True, bf16=False, fp16=False,
            per_device_train_batch_size=micro, num_generations=GROUP_SIZE,
            gradient_accumulation_steps=accumulate, steps_per_generation=accumulate, num_iterations=1,
            max_completion_length=args.new_tokens, temperature=1.0, top_p=1.0, top_k=0, min_p=None,
            repetition_penalty=1.0, beta=BETA, loss_type="grpo", scale_rewards="group", epsilon=0.2,
            learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
            gradient_checkpointing=args.gradient_checkpointing,  # GRPOConfig's default is True
            use_vllm=False, report_to=[], logging_steps=1, save_strategy="no", disable_tqdm=True,
            log_completions=False, dataloader_num_workers=0,
        )
        trainer = GRPOTrainer(model=model, reward_funcs=[correctness], args=config, train_dataset=dataset,
                              processing_class=tokenizer, callbacks=[StepTimer()])
        trainer.train()
    versions = {"trl": trl.__version__, "trl_file": trl.__file__, "torch": torch.__version__,
                "torch_file": torch.__file__, "transformers": transformers.__version__,
                "transformers_file": transformers.__file__, "datasets": datasets.__version__,
                "vllm_imported": sys.modules.get("vllm") is not None}
    Path(args.child_out).write_text(json.dumps({
        "step_times": step_times, "versions": versions,
        "resp_len": statistics.mean(lengths) if lengths else None}))
    return 0



def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", required=True, help="the HF model directory both trainers load")
    parser.add_argument("--child-out", required=True, help="JSON file for step times and versions")
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--new-tokens", type=int, required=True)
    parser.add_argument("--trl-path", default=None, help="folder holding trl (pip install --target)")
    parser.add_argument("--micro-batch", type=int, default=None, help="per_device_train_batch_size (default 128)")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="GRPOConfig(gradient_checkpointing=True)")
    parser.add_argument("--trl-allow-vllm", action="store_true", help="let TRL import an installed vllm")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
