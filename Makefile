# Two entry points for a fresh machine:  make demo  (install + search on Fashion-MNIST)
#                                        make test  (install + data + the test suite)
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
FMNIST  = /usr/share/datasets/fashion-mnist

.PHONY: demo test install data bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch/torchvision pinned to the releases on this machine's wheel store (constraints.txt);
	# the package itself only asks for torch>=2.3, so users with a newer torch can install it
	$(PY) -m pip install --quiet -c constraints.txt torch torchvision
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# Fashion-MNIST from Debian when apt-get is usable; otherwise say how to get it.
data:
	@if [ -f $(FMNIST)/t10k-labels-idx1-ubyte.gz ] || [ -n "$$POPCLI_DATA" ]; then \
	  echo "Fashion-MNIST: found"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null && echo "Fashion-MNIST: installed to $(FMNIST)"; \
	elif command -v sudo >/dev/null && command -v apt-get >/dev/null; then \
	  sudo apt-get update -qq && sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	else \
	  echo "Fashion-MNIST not found: install Debian's dataset-fashion-mnist, set POPCLI_DATA to a folder with its IDX files,"; \
	  echo "or run searches with --set data.download=true to let torchvision download it."; exit 1; \
	fi

demo: install data
	$(VENV)/bin/popcli search --force

test: install data
	$(PY) -m pytest -q

bench: install
	$(PY) benchmarks/step_time.py

clean:
	rm -rf $(VENV) runs .pytest_cache
