"""The names of the run folder's rows (no torch: analysis reads them too). README documents each
metric; docs/DESIGN.md the files."""

# Every metrics.jsonl row has these keys (null where not applicable). A run with eval_samples > 0
# adds one eval_pass@k key per k of eval_pass_k.
METRIC_KEYS = (
    "step", "samples", "reward_mean", "reward_std", "accuracy",
    "adv_mean", "adv_std", "adv_abs_mean", "adv_zero_frac", "groups_degenerate_frac",
    "groups_degenerate_frac_sampled", "std_gain_mean", "std_gain_max",
    "kl_ref_mean", "kl_clamp_frac", "clip_frac_low", "clip_frac_high", "clip_frac_dual", "ratio_mean", "entropy_mean",
    "pg_loss", "loss", "grad_norm", "tis_weight_mean", "value_loss", "value_mean", "critic_explained_var",
    "resp_len_mean", "resp_len_max", "resp_len_correct_mean", "resp_len_incorrect_mean", "truncated_frac",
    "filter_rounds", "filter_prompts_drawn", "filter_groups_dropped", "verify_timeouts", "nonfinite_skipped",
    "sampler_logp_diff_mean", "sampler_logp_diff_max",
    "mem_peak_bytes", "mem_peak_rollout_bytes", "mem_peak_verify_bytes", "mem_peak_reference_bytes",
    "mem_peak_critic_bytes", "mem_peak_update_bytes",
    "mem_params_bytes", "mem_policy_params_bytes", "mem_critic_params_bytes", "mem_reference_params_bytes",
    "mem_grads_bytes", "mem_optimizer_bytes",
    "time_step_s", "time_rollout_s", "time_verify_s", "time_reference_s", "time_critic_s", "time_update_s",
    "tokens_per_s", "response_tokens", "lr", "eval_accuracy",
)

# Every groups.jsonl row (one per group per step).
GROUP_KEYS = ("step", "group", "success_rate", "reward_mean", "reward_std", "std_gain", "adv_abs_mean", "degenerate")

# Every samples.jsonl row.
SAMPLE_KEYS = ("step", "kind", "prompt", "answer", "response", "reward", "correct", "length", "truncated")
