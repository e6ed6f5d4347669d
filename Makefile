# One virtual environment for everything; `make test` and `make demo` create it on a fresh machine.
# torch is pinned to the CPU build first, so pip never pulls a multi-GB CUDA build for `torch>=2.4`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1

.PHONY: setup test demo bench clean

$(VENV)/.installed: setup.py
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

test: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

demo: setup
	$(BIN)/python -m tasks.tiny --output out/tiny-roberta
	$(BIN)/python run_glue_like.py --task mawps --fold 0 --model_name_or_path out/tiny-roberta \
		--sparsity_method gmp --sparsity 0.5 --max_steps 100 --sparsity_update_every 10 --per_device_train_batch_size 16 \
		--output_dir out/demo --report_to none

bench: setup
	$(BIN)/python benchmarks/report.py

clean:
	rm -rf $(VENV) out build *.egg-info
