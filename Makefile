# roomcast: `make demo` records a synthetic room into ./recordings; `make test` runs every check.

SHELL := /bin/bash
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Everything the build and the tests need from Debian 12.
APT_PACKAGES := pkg-config build-essential libssl-dev \
	libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstreamer-plugins-bad1.0-dev \
	gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad \
	gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-tools \
	fonts-dejavu-core ffmpeg time nginx libnginx-mod-rtmp openssh-server redis-server \
	janus gstreamer1.0-nice iproute2 util-linux

.PHONY: setup build release demo test fmt lint bench fuzz clean

setup:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	else echo "setup: all packages present"; fi
	@python3 -c "import moto.server" 2>/dev/null || python3 -m pip install -q "moto[server]"
	@command -v cargo >/dev/null || { echo "cargo not found: install a Rust toolchain (rustup)"; exit 1; }

build: setup
	cargo build

release: setup
	cargo build --release

demo: release
	./target/release/roomcast demo

fmt:
	cargo fmt

lint: setup
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings

test: lint
	cargo test -- --test-threads=2
	$(MAKE) fuzz FUZZ_SECS=30

# Request and job parsing under libFuzzer (cargo-fuzz needs nightly flags: RUSTC_BOOTSTRAP
# lets the stable toolchain accept them).
FUZZ_SECS ?= 120
fuzz:
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	mkdir -p fuzz/corpus/api_input
	RUSTC_BOOTSTRAP=1 cargo fuzz run api_input fuzz/corpus/api_input fuzz/seeds -- -max_total_time=$(FUZZ_SECS)

bench: release
	@for p in h264-720p30 h264-1080p30; do for n in 2 4 9; do \
	  ./target/release/roomcast bench composite --participants $$n --preset $$p --seconds 20 2>/dev/null; \
	done; done

clean:
	cargo clean
	rm -rf recordings
