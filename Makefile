# unigrpo: the README's two commands are `make demo` and `make test`.
CARGO ?= cargo
PROMPT ?= a circle the colour of the sky
SEED ?= 7
MODEL ?= models/tiny-shapes

.PHONY: all ort build demo test lint bench bench-torch export-env clean install mpi examples-mpi
# Open MPI present: the MPI build of the CLI, its tests and the MPI example host are built too
# (libclang too: mpi-sys runs bindgen)
HAVE_MPI := $(shell command -v mpicc >/dev/null 2>&1 && command -v mpirun >/dev/null 2>&1 && ls /usr/lib/llvm-*/lib/libclang*.so >/dev/null 2>&1 && echo 1)
COMMA := ,
TEST_FEATURES := fault-injection$(if $(HAVE_MPI),$(COMMA)mpi)
PREFIX ?= /usr/local

all: build

# ONNX Runtime's shared library from the PyPI wheel, into .cache/ (ignored by git)
ort:
	@scripts/fetch-onnxruntime.sh

build: ort
	$(CARGO) build --release --workspace
	$(if $(HAVE_MPI),$(MAKE) --no-print-directory examples-mpi)

# `unigrpo` with the mpi feature (mpirun -n N target/mpi/release/unigrpo train ...), in its own
# target dir so the ordinary binary never links libmpi
mpi: ort
	$(CARGO) build --release -p unigrpo-cli --features mpi --target-dir target/mpi

# the C example host with its own MPI_Allreduce (examples/finetune_mpi.c)
examples-mpi:
	mpicc -std=c11 -O2 -Iinclude examples/finetune_mpi.c -Ltarget/release -lunigrpo \
		-Wl,-rpath,$(CURDIR)/target/release -o target/release/finetune_mpi

demo: build
	@mkdir -p out
	./target/release/unigrpo generate --model $(MODEL) --prompt "$(PROMPT)" --seed $(SEED) --out out/demo.png --upscale 8
	@echo "wrote out/demo.png (the 16x16 image scaled 8x)"

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings
	$(CARGO) clippy --release -p unigrpo -p unigrpo-cli --features unigrpo-cli/fault-injection$(if $(HAVE_MPI),$(COMMA)unigrpo-cli/mpi) -- -D warnings

test: ort lint
	$(CARGO) build --release --workspace
	# the CLI of the crash and MPI tests (tests/crash.rs, tests/mpi.rs): fault points, and MPI
	# when Open MPI is present, in a target dir of its own
	$(CARGO) build --release -p unigrpo-cli --features $(TEST_FEATURES) --target-dir target/test-features
	$(CARGO) test --release --workspace

bench: build
	scripts/bench.sh

# The offline export environment (PyTorch, about 3 GB of wheels; never needed by build or test)
export-env: .venv-export/bin/python
.venv-export/bin/python: models/requirements-export.txt
	python3 -m venv .venv-export
	.venv-export/bin/pip install --no-deps -r models/requirements-export.txt
	@touch $@

# The default trainer step in PyTorch eager on the same networks and weights, alternating with
# unigrpo's (scripts/bench_torch.py): the ratio and both phase splits
bench-torch: build export-env
	.venv-export/bin/python scripts/bench_torch.py

clean:
	$(CARGO) clean
	rm -rf out

# Header, both libraries (libunigrpo.so.1.ABI with its .so.1 SONAME link and .so link), ONNX
# Runtime beside them (found there at run time), unigrpo.pc and the CMake package config.
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
ABI := $(shell sed -n 's/^pub const UNIGRPO_ABI_VERSION: u32 = \([0-9]*\);/\1/p' bindings/c/src/lib.rs)
SOVERSION := 1.$(ABI)
install: build
	install -d $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/lib/cmake/unigrpo
	install -m 644 include/unigrpo.h bindings/cpp/unigrpo.hpp $(DESTDIR)$(PREFIX)/include/
	install -m 755 target/release/libunigrpo.so $(DESTDIR)$(PREFIX)/lib/libunigrpo.so.$(SOVERSION)
	ln -sf libunigrpo.so.$(SOVERSION) $(DESTDIR)$(PREFIX)/lib/libunigrpo.so.1
	ln -sf libunigrpo.so.1 $(DESTDIR)$(PREFIX)/lib/libunigrpo.so
	install -m 644 target/release/libunigrpo.a $(DESTDIR)$(PREFIX)/lib/
	cp -P .cache/onnxruntime/lib/libonnxruntime*.so* $(DESTDIR)$(PREFIX)/lib/
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' \
		bindings/unigrpo.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/unigrpo.pc
	sed -e 's|@SOVERSION@|$(SOVERSION)|' bindings/cmake/unigrpoConfig.cmake.in \
		> $(DESTDIR)$(PREFIX)/lib/cmake/unigrpo/unigrpoConfig.cmake
	sed -e 's|@VERSION@|$(VERSION)|' bindings/cmake/unigrpoConfigVersion.cmake.in \
		> $(DESTDIR)$(PREFIX)/lib/cmake/unigrpo/unigrpoConfigVersion.cmake
