# Two commands on a fresh machine: `make demo` (set up, convert tiny.en, transcribe a sample) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SAMPLE := samples/jfk.flac
BUNDLE := bundles/tiny.en

.PHONY: demo test bench gpu-analyzer clean

$(BIN)/whisper-tflite: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

$(BUNDLE)/manifest.json: $(BIN)/whisper-tflite
	$(BIN)/whisper-tflite convert tiny.en --out $(BUNDLE) --force

demo: $(BUNDLE)/manifest.json
	$(BIN)/whisper-tflite transcribe $(SAMPLE) --model $(BUNDLE)

# Two workers, a test file each at a time: a test keeps about one core busy (Python between interpreter calls,
# a conversion), and the workers share each converted bundle (tests/bundles.py).
test: $(BIN)/whisper-tflite
	$(BIN)/python -m pytest -n 2 --dist loadfile

bench: $(BIN)/whisper-tflite
	$(BIN)/python benchmarks/run.py

# A Python for --gpu-analyzer (convert, inspect): .cache/tensorflow-2.16.1/bin/python
GPU_ANALYZER := .cache/tensorflow-2.16.1
gpu-analyzer: $(GPU_ANALYZER)/installed

$(GPU_ANALYZER)/installed: gpu-analyzer.txt
	$(PYTHON) -m venv $(GPU_ANALYZER)
	$(GPU_ANALYZER)/bin/pip install --quiet -r gpu-analyzer.txt
	touch $@

clean:
	rm -rf $(VENV) bundles .cache
