# roomcast: `make demo` records a synthetic room into ./recordings; `make test` runs every check.
#
# Both install what they need from Debian 12 (root, or sudo for a normal user):
#   make demo  -> RUNTIME_PACKAGES only (GStreamer, its plugins, fonts, build headers)
#   make test  -> also TEST_PACKAGES (the real servers the tests start on loopback) and a Python
#                 virtual environment in .tools/ holding the S3-compatible test server (moto)
#                 and the OpenAPI validator.
# Services that Debian would start and enable on install (ssh, redis-server, janus, nginx) are
# neither started nor left enabled: the tests run their own instances on free ports.

SHELL := /bin/bash
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# What recording needs: build headers, GStreamer and its plugins (WebRTC included), label fonts.
RUNTIME_PACKAGES := pkg-config build-essential libssl-dev \
	libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstreamer-plugins-bad1.0-dev \
	gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad \
	gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-nice gstreamer1.0-x gstreamer1.0-wpe \
	fonts-dejavu-core

# What building and running the container image needs (`make image`, and its test).
CONTAINER_PACKAGES := podman buildah runc debootstrap

# The tests build deploy/kubernetes with kustomize, which comes with kubectl (1.14 and later);
# where there is none, Debian's (kubernetes-client).
KUBECTL_PACKAGE := $(if $(shell command -v kubectl),,kubernetes-client)

# What only the tests need: media probes, the servers they start, namespaces, a Python venv.
TEST_PACKAGES := ffmpeg time gstreamer1.0-tools nginx libnginx-mod-rtmp openssh-server \
	redis-server janus iproute2 util-linux procps python3-venv openssl nftables systemd \
	chromium chromium-driver

# The S3-compatible server the tests start, in a virtual environment of the project's own.
TOOLS_DIR := $(CURDIR)/.tools
VENV := $(TOOLS_DIR)/venv
MOTO_SPEC := moto[server]>=5,<6
# The OpenAPI validator the tests run over the API's document.
OPENAPI_VALIDATOR_SPEC := openapi-spec-validator>=0.7,<1
# The Kubernetes schemas the tests check deploy/kubernetes against.
KUBE_VALIDATE_SPEC := kubernetes-validate>=1.30,<2

.PHONY: setup test-setup build release demo test soak fmt lint bench fuzz clean image image-base

# Installs the packages named in $(1) that are missing. Nothing is started on install (a
# policy-rc.d that refuses every start is in place for the duration), and the services of every
# package this call added (dependencies included: nginx's unit comes with nginx-common) are
# disabled afterwards.
define apt_install
	@missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then echo "$(2): all packages present"; exit 0; fi; \
	echo "$(2): installing$$missing"; \
	before=$$(dpkg-query -W -f='$${Package}\n' 2>/dev/null | sort); \
	policy=/usr/sbin/policy-rc.d; own_policy=""; \
	if [ ! -e $$policy ]; then \
	  printf '#!/bin/sh\nexit 101\n' | $(SUDO) tee $$policy >/dev/null && $(SUDO) chmod 755 $$policy && own_policy=1; \
	fi; \
	$(SUDO) apt-get update -qq && \
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	rc=$$?; \
	[ -n "$$own_policy" ] && $(SUDO) rm -f $$policy; \
	[ $$rc = 0 ] || exit $$rc; \
	added=$$(comm -13 <(echo "$$before") <(dpkg-query -W -f='$${Package}\n' 2>/dev/null | sort)); \
	for p in $$added; do \
	  for unit in $$(dpkg-query -L $$p 2>/dev/null | grep -E '^/(usr/)?lib/systemd/system/[^/]+\.service$$' | xargs -r -n1 basename); do \
	    case $$unit in *@.service) continue;; esac; \
	    if command -v systemctl >/dev/null; then $(SUDO) systemctl disable --quiet $$unit 2>/dev/null || true; fi; \
	    if command -v deb-systemd-helper >/dev/null; then $(SUDO) deb-systemd-helper disable $$unit 2>/dev/null || true; fi; \
	  done; \
	  for script in $$(dpkg-query -L $$p 2>/dev/null | grep -E '^/etc/init\.d/[^/]+$$' | xargs -r -n1 basename); do \
	    command -v update-rc.d >/dev/null && $(SUDO) update-rc.d $$script disable >/dev/null 2>&1 || true; \
	  done; \
	done
endef

setup:
	$(call apt_install,$(RUNTIME_PACKAGES),setup)
	@command -v cargo >/dev/null || { echo "cargo not found: install a Rust toolchain (rustup)"; exit 1; }

test-setup: setup
	$(call apt_install,$(TEST_PACKAGES) $(CONTAINER_PACKAGES) $(KUBECTL_PACKAGE),test-setup)
	@[ -x $(VENV)/bin/python ] || python3 -m venv $(VENV)
	@$(VENV)/bin/python -c "import moto.server" 2>/dev/null || \
	  $(VENV)/bin/pip install -q --disable-pip-version-check "$(MOTO_SPEC)"
	@$(VENV)/bin/python -c "import openapi_spec_validator" 2>/dev/null || \
	  $(VENV)/bin/pip install -q --disable-pip-version-check "$(OPENAPI_VALIDATOR_SPEC)"
	@[ -x $(VENV)/bin/kubernetes-validate ] || \
	  $(VENV)/bin/pip install -q --disable-pip-version-check "$(KUBE_VALIDATE_SPEC)"

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

test: test-setup lint
	ROOMCAST_TEST_PYTHON=$(VENV)/bin/python cargo test -- --test-threads=2

# Inputs worth keeping (a crash the fuzzer found, a hostile request found by hand) go in
# fuzz/regressions, which is committed and replayed by `make test`.
# The long measurements behind README figures that `make test` holds only in short form: the
# ten-minute fast-microphone lip sync, the CPU of four real WebRTC publishers, simulcast in a
# room of nine. Each prints its figures (release build, one at a time: they measure CPU).
soak: test-setup
	ROOMCAST_TEST_PYTHON=$(VENV)/bin/python cargo test --release \
	  --test lip_sync --test janus --test simulcast -- --ignored --nocapture --test-threads=1
	ROOMCAST_TEST_PYTHON=$(VENV)/bin/python ROOMCAST_SOAK_ROOMS=$(SOAK_ROOMS) cargo test --release \
	  --test soak -- --nocapture

# Requests, room events, layout files and stored job records under libFuzzer (cargo-fuzz
# needs nightly flags: RUSTC_BOOTSTRAP lets the stable toolchain accept them). The same checks
# (fuzz/exercise.rs) run in `make test` over the seeds, the corpus this target keeps and
# 20,000 deterministic mutations (tests/fuzz_inputs.rs), without a second build of every
# dependency.
FUZZ_SECS ?= 120
# Rooms the fleet chaos soak records (`make soak`; `make test` records 4).
SOAK_ROOMS ?= 20
FUZZ_BUILD ?=
fuzz:
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	mkdir -p fuzz/corpus/api_input
	RUSTC_BOOTSTRAP=1 cargo fuzz run $(FUZZ_BUILD) api_input fuzz/corpus/api_input fuzz/seeds -- -max_total_time=$(FUZZ_SECS)

bench: release
	@for p in h264-720p30 h264-1080p30; do for n in 2 4 9; do \
	  ./target/release/roomcast bench composite --participants $$n --preset $$p --seconds 20 2>/dev/null; \
	done; done

# The container image (deploy/container/Containerfile) around a roomcast binary built here:
# BIN (default: the release build), BASE (any Debian 12 image; default debian:bookworm-slim
# from a registry), IMAGE (the name it gets). `make image-base` makes a Debian 12 base from
# Debian's packages alone (debootstrap), for machines that reach no image registry:
#   make image-base && make image BASE=localhost/roomcast-base:bookworm
IMAGE ?= localhost/roomcast:latest
BASE ?= debian:bookworm-slim
BIN ?= target/release/roomcast
BASE_IMAGE ?= localhost/roomcast-base:bookworm
DEBIAN_MIRROR ?= $(shell sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1 || echo http://deb.debian.org/debian)

image-base:
	$(call apt_install,$(CONTAINER_PACKAGES),image-base)
	@if $(SUDO) podman image exists $(BASE_IMAGE); then echo "image-base: $(BASE_IMAGE) present"; exit 0; fi; \
	  root=$$(mktemp -d) && trap '$(SUDO) rm -rf "$$root"' EXIT && \
	  $(SUDO) debootstrap --variant=minbase bookworm "$$root" "$(DEBIAN_MIRROR)" >/dev/null && \
	  $(SUDO) rm -rf "$$root"/var/cache/apt/archives/*.deb "$$root"/var/lib/apt/lists/* && \
	  $(SUDO) tar -C "$$root" -c . | $(SUDO) podman import --quiet - $(BASE_IMAGE) >/dev/null && \
	  echo "image-base: $(BASE_IMAGE) made from $(DEBIAN_MIRROR)"

image:
	$(call apt_install,$(CONTAINER_PACKAGES),image)
	@if [ "$(BIN)" = target/release/roomcast ]; then $(MAKE) --no-print-directory release; fi
	@ctx=$$(mktemp -d) && trap 'rm -rf "$$ctx"' EXIT && \
	  cp deploy/container/Containerfile "$$ctx"/ && strip -o "$$ctx/roomcast" "$(BIN)" && \
	  $(SUDO) buildah bud --quiet --isolation chroot --layers=false -f Containerfile \
	    --build-arg BASE=$(BASE) --build-arg REVISION=$$(git rev-parse HEAD 2>/dev/null || echo unknown) \
	    -t $(IMAGE) "$$ctx" >/dev/null && \
	  echo "image: $(IMAGE), $$($(SUDO) podman image inspect --format '{{.Size}}' $(IMAGE)) bytes"

clean:
	cargo clean
	rm -rf recordings .tools
