# Twill: build, test, run. Every target installs what it needs on a fresh Debian machine.
SHELL := /bin/bash
SWIFT ?= swift
# Debian packages the build and the tests need.
APT_PACKAGES := etcd-server etcd-client libcurl4-openssl-dev libmnl-dev iproute2 iputils-ping openssl iperf3 procps util-linux curl iptables containernetworking-plugins busybox-static docker.io python3

.PHONY: deps build test run clean-test-leftovers demo demo-down release

deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing; \
	fi

build: deps
	$(SWIFT) build

# The whole suite: unit tests and integration tests against a real etcd and the real kernel.
test: deps
	$(SWIFT) build --build-tests
	$(SWIFT) test; rc=$$?; $(MAKE) -s clean-test-leftovers; exit $$rc

# Anything a crashed test run could have left behind (tests clean up after themselves; this
# is the net under them).
clean-test-leftovers:
	-@pkill -9 -f 'twill-test-etcd-' 2>/dev/null; true
	-@rm -rf /tmp/twill-test-etcd-* 2>/dev/null; true

run: build
	$(SWIFT) run twill version

# The main job: a 3-node cluster in network namespaces (BACKEND=udp|vxlan|host-gw).
demo: build
	deploy/demo.sh up $${BACKEND:-udp}

demo-down:
	deploy/demo.sh down

# A binary with the Swift runtime linked in: a node needs only libcurl and libmnl.
release: deps
	$(SWIFT) build -c release --static-swift-stdlib --product twill
	@echo "built $$($(SWIFT) build -c release --show-bin-path)/twill"
