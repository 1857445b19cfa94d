# unigrpo: the README's two commands are `make demo` and `make test`.
CARGO ?= cargo
PROMPT ?= a circle the colour of the sky
SEED ?= 7
MODEL ?= models/tiny-shapes

.PHONY: all ort build demo test lint bench clean

all: build

# ONNX Runtime's shared library from the PyPI wheel, into .cache/ (ignored by git)
ort:
	@scripts/fetch-onnxruntime.sh

build: ort
	$(CARGO) build --release

demo: build
	@mkdir -p out
	./target/release/unigrpo generate --model $(MODEL) --prompt "$(PROMPT)" --seed $(SEED) --out out/demo.png --upscale 8
	@echo "wrote out/demo.png (the 16x16 image scaled 8x)"

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --release --all-targets -- -D warnings

test: ort lint
	$(CARGO) test --release

bench: build
	scripts/bench.sh

clean:
	$(CARGO) clean
	rm -rf out
