"""The registry of named presets (importable without torch): one module per algorithm."""
from algos import dapo, dr_grpo, grpo, gspo, ppo, rloo
from algos.config import AlgoConfig

PRESETS: dict[str, AlgoConfig] = {
    module.PRESET.name: module.PRESET for module in (ppo, grpo, dr_grpo, dapo, rloo, gspo)
}
