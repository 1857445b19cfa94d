# unigrpo: the README's two commands are `make demo` and `make test`.
CARGO ?= cargo
PROMPT ?= a circle the colour of the sky
SEED ?= 7
MODEL ?= models/tiny-shapes

.PHONY: all ort build demo test lint bench clean install
PREFIX ?= /usr/local

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
	$(CARGO) build --release
	$(CARGO) test --release

bench: build
	scripts/bench.sh

clean:
	$(CARGO) clean
	rm -rf out

# Header, both libraries, ONNX Runtime beside them (found there at run time) and unigrpo.pc.
install: build
	install -d $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 644 include/unigrpo.h bindings/cpp/unigrpo.hpp $(DESTDIR)$(PREFIX)/include/
	install -m 755 target/release/libunigrpo.so $(DESTDIR)$(PREFIX)/lib/
	install -m 644 target/release/libunigrpo.a $(DESTDIR)$(PREFIX)/lib/
	cp -P .cache/onnxruntime/lib/libonnxruntime*.so* $(DESTDIR)$(PREFIX)/lib/
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)|' \
		bindings/unigrpo.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/unigrpo.pc
