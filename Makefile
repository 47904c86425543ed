# Twill: build, test, run. Every target installs what it needs on a fresh Debian machine.
SHELL := /bin/bash
SWIFT ?= swift
# Debian packages the build and the tests need.
APT_PACKAGES := etcd-server etcd-client libcurl4-openssl-dev libmnl-dev iproute2 iputils-ping openssl iperf3 procps util-linux curl iptables nftables libssl-dev wireguard-go wireguard-tools containernetworking-plugins busybox-static docker.io python3 debootstrap

.PHONY: deps build test unit integration e2e unit-run integration-run e2e-run lint format run clean-test-leftovers demo demo-down release release-check

deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing; \
	fi

build: deps
	$(SWIFT) build

# The whole suite, tier by tier: formatting, then unit tests (no root, no etcd, no network),
# then integration tests (a real etcd, the real kernel), then end-to-end tests (whole agents,
# CNI, Docker, systemd). Integration and end-to-end suites run one after another: many start
# their own etcd, agents and namespaces, and lease TTL checks stay honest on 2 cores that way.
test: deps
	$(SWIFT) build --build-tests
	$(MAKE) -s lint
	$(MAKE) -s unit-run
	$(MAKE) -s integration-run
	$(MAKE) -s e2e-run
	$(MAKE) release-check

# Logic behind small protocols, on in-memory fakes (etcd, kernel routing, TUN, sockets):
# passes inside `unshare -n`, as any user, in seconds once built.
unit: deps
	$(SWIFT) build --build-tests
	$(MAKE) -s unit-run

# A real etcd on loopback ports (one member and a 3-member cluster) and the real kernel
# (namespaces, veth, TUN, routes, iptables/nftables), as root.
integration: deps
	$(SWIFT) build --build-tests
	$(MAKE) -s integration-run

# Whole agents in namespace hosts, flanneld beside Twill, CNI plugins, Docker, systemd.
e2e: deps
	$(SWIFT) build --build-tests
	$(MAKE) -s e2e-run

# The -run targets assume a build (make test builds once for all three).
unit-run:
	TWILL_TEST_TIER=unit $(SWIFT) test --skip-build --skip EndToEndTests

integration-run:
	TWILL_TEST_TIER=integration $(SWIFT) test --skip-build --no-parallel --skip EndToEndTests; rc=$$?; $(MAKE) -s clean-test-leftovers; [ $$rc = 0 ] || exit $$rc

e2e-run:
	TWILL_TEST_TIER=e2e $(SWIFT) test --skip-build --no-parallel --filter '^EndToEndTests\.'; rc=$$?; $(MAKE) -s clean-test-leftovers; [ $$rc = 0 ] || exit $$rc

# swift format with the committed .swift-format; `make format` rewrites, `make lint` checks.
LINT_PATHS := Package.swift Sources Tests
lint:
	$(SWIFT) format lint --strict --recursive --parallel $(LINT_PATHS)
	@echo "lint: swift format finds nothing to change"

format:
	$(SWIFT) format format --in-place --recursive --parallel $(LINT_PATHS)

# The release binary carries the Swift runtime: it runs with an empty environment and ldd
# shows no Swift library, only system ones (libcurl, libmnl, libc...).
release-check: release
	@bin=$$($(SWIFT) build -c release --show-bin-path)/twill; \
	out=$$(env -i "$$bin" version) || { echo "release-check: $$bin version failed"; exit 1; }; \
	echo "release-check: env -i twill version -> $$out"; \
	if ldd "$$bin" | grep -i swift; then echo "release-check: FAILED, the binary needs Swift libraries"; exit 1; fi; \
	echo "release-check: ldd lists no Swift library:"; ldd "$$bin" | sed 's/^/  /'; \
	echo "release-check: 1 passed, 0 failed"

# Anything a crashed test run could have left behind (tests clean up after themselves; this
# is the net under them).
clean-test-leftovers:
	-@pkill -9 -f 'twill-test-etcd-' 2>/dev/null; true
	-@for ns in $$(ip netns list 2>/dev/null | awk '{print $$1}' | grep -E '^(twt|twu|twm|twc|twb)-'); do \
	  for p in $$(ip netns pids $$ns 2>/dev/null); do kill -9 $$p 2>/dev/null; done; ip netns del $$ns; done; true
	-@for m in $$(awk '$$2 ~ "^/tmp/twill-test-" {print $$2}' /proc/mounts | sort -r); do umount -l "$$m"; done; true
	-@for d in /tmp/twill-test-cluster-*/sd; do [ -d "$$d" ] && bash Tests/Scripts/systemd-node.sh stop "$$d"; done; true
	-@rm -rf /tmp/twill-test-* 2>/dev/null; true

run: demo

# The main job: a 3-node cluster in network namespaces (BACKEND=udp|vxlan|host-gw).
demo: build
	deploy/demo.sh up $${BACKEND:-udp}

demo-down:
	deploy/demo.sh down

# A binary with the Swift runtime linked in: a node needs only libcurl and libmnl.
release: deps
	$(SWIFT) build -c release --static-swift-stdlib --product twill
	@echo "built $$($(SWIFT) build -c release --show-bin-path)/twill"
