# `make train`: trains and evaluates trade_eligibility on the recordings (deploy/triton/train.py), writes
# deploy/triton/REPORT.md + reliability.png and model versions 1 and 2 (see the report). Its venv: .dev/venv-train.
# `make label-check`: te features --label against the independent Python label (deploy/triton/check_label.py).
TRAIN_VENV := .dev/venv-train
# `make train-venv`: only that venv (matplotlib for `te model --plot`, which finds it here or via TE_PYTHON;
# lightgbm for the tests' independent scoring of the served LightGBM version, deploy/triton/score_reference.py).
.PHONY: train label-check train-venv
$(TRAIN_VENV)/.installed: deploy/triton/requirements-train.txt
	python3 -m venv $(TRAIN_VENV)
	$(TRAIN_VENV)/bin/pip install -q --disable-pip-version-check -r $<
	cp $< $@

train-venv: $(TRAIN_VENV)/.installed

train: build $(TRAIN_VENV)/.installed
	TE="$$($(SWIFT) build --show-bin-path)/te" $(TRAIN_VENV)/bin/python deploy/triton/train.py

label-check:
	python3 deploy/triton/check_label.py "$$($(SWIFT) build --show-bin-path)/te"
