"""Policy models, the character tokenizer, the critic, and log-prob helpers.

Everything here is ordinary Hugging Face: the tokenizer is a ``PreTrainedTokenizerFast`` saved as
``tokenizer.json`` and the models are ``Qwen2ForCausalLM`` saved as safetensors, so
``AutoTokenizer``/``AutoModelForCausalLM`` and vLLM load a built model directory with no custom code,
and any local HF causal-LM checkpoint (e.g. Qwen2.5-0.5B on a cluster) can stand in for a preset.

Size presets (``SIZES``), all with head_dim 64 (the head size vLLM's CPU backend supports), tied
input/output embeddings (as Qwen2.5-0.5B) and the 259-token character (byte) vocabulary:

=======  ======  ======  =====  ========  ============  ==========
size     hidden  layers  heads  kv heads  intermediate  parameters
=======  ======  ======  =====  ========  ============  ==========
tiny     128     2       2      2         512           0.56M
small    256     5       4      4         1024          5.32M
base     512     8       8      8         1792          30.6M
medium   768     14      12     4         3072          121M
large    896     32      14     2         4864          477M
=======  ======  ======  =====  ========  ============  ==========

``large`` has Qwen2.5-0.5B's layer shape (896 wide, 14 query / 2 key-value heads, 4864 MLP) with 32
layers instead of 24, so that its parameter count matches Qwen's 0.49B, most of which is Qwen's
152K-token embedding table that the character vocabulary does not have.
"""

from experiments.memory import count_params, grad_bytes, optimizer_state_bytes, param_bytes
from experiments.models.critic import VALUE_HEAD_FILE, ValueModel
from experiments.models.logprobs import logprobs_and_entropy, position_ids_from_mask, response_logprobs
from experiments.models.presets import (
    HEAD_DIM, MAX_POSITIONS, SIZES, LoadedPolicy, ModelSize, build_model, built_model_dir, default_cache_dir,
    file_lock, load_policy, model_config, publish_dir_atomically, resolve_cache_dir, resolve_dtype,
)
from experiments.models.tokenizer import (
    BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, SPECIAL_TOKENS, VOCAB, build_char_tokenizer, token_id_of_char,
)

__all__ = [
    "BOS_TOKEN", "EOS_TOKEN", "HEAD_DIM", "MAX_POSITIONS", "PAD_TOKEN", "SIZES", "SPECIAL_TOKENS", "VALUE_HEAD_FILE",
    "VOCAB", "LoadedPolicy", "ModelSize", "ValueModel", "build_char_tokenizer", "build_model", "built_model_dir",
    "count_params", "default_cache_dir", "file_lock", "grad_bytes", "load_policy", "logprobs_and_entropy",
    "model_config", "optimizer_state_bytes", "param_bytes", "position_ids_from_mask", "publish_dir_atomically",
    "resolve_cache_dir", "resolve_dtype", "response_logprobs", "token_id_of_char",
]
