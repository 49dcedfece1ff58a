"""The valid values of each string knob: plain tuples, importable without torch (`algos.config`
validates against them, `algos.core` dispatches on them)."""

BASELINES = ("critic", "group", "leave_one_out")
GROUP_SCALES = ("group_std", "batch_std", "none")
SCALES = ("group_std", "batch_std", "batch_whiten", "none")
AGGREGATIONS = ("seq_mean_token_mean", "token_mean", "seq_mean_token_sum_norm")
KL_KINDS = ("k1", "k2", "k3")
KL_PLACEMENTS = ("loss", "reward")
FILTER_ON = ("accuracy", "reward")
RATIO_LEVELS = ("token", "sequence")
