# victor.ops — one entry point for setup, tests and the local demo.
#   make test      everything CI runs (venv, docker, images, wheelhouse, lint, sanity, every test tier, molecule)
#   make demo      the main job (monthly maintenance) on the embedded local default
# Test tiers: make unit (pure Python, in-process) | functional (real tools on this host, no docker)
#   | integration (real services, docker) | awx | molecule SCENARIO=<name>; ARGS='-k name' or ARGS=<file>::<test>
#   runs part of a pytest tier. make molecule-dev SCENARIO=<name>: converge (+ side_effect) + verify, no destroy.
# Also: make lint | sanity | fuzz | images | wheelhouse | molecule-destroy SCENARIO=<name>

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV            := $(CURDIR)/.venv
# The tool venv's interpreter: Debian's python3 (3.11, built with PGO and LTO, the managed
# nodes' interpreter too) when it can make venvs (python3-venv); a pyenv build without
# --enable-optimizations ran ansible-playbook's local modules 13 % slower (measured
# 2026-12-03). Otherwise the python3 on PATH. Expanded only where a target uses it.
PYTHON          ?= $(or $(shell /usr/bin/python3 -c 'import ensurepip' 2>/dev/null && echo /usr/bin/python3),python3)
STAGE           := scripts/stage.sh
COLLECTIONS_DIR := $(CURDIR)/.cache/collections
COLLECTION_LINK := $(COLLECTIONS_DIR)/ansible_collections/victor/ops
SCENARIOS       := $(sort $(notdir $(patsubst %/molecule.yml,%,$(wildcard molecule/*/molecule.yml))))
# make test runs its stages TEST_JOBS at a time (each stage's output goes to its log; 3 was
# faster than 4 on the 2-core machine: 2978 s against 3220 s, fresh clones, 2026-12-03),
# longest first (their times in a fresh-clone run, 2026-12-03) so the short ones fill the
# gaps at the end; a scenario not listed here runs after the listed ones.
TEST_JOBS       ?= 3
# The integration tests are two stages in make test (each ~10 min alone): the docker deploy tests
# (image builds, failing gates) and the rest, so neither is the one stage everything waits for.
INTEGRATION_DEPLOY := tests/integration/test_deploy_docker.py tests/integration/test_deploy_compose.py
ORDERED_STAGES  := molecule-run-victor_nginx_lb integration-services integration-deploy \
                   molecule-run-victor_deploy_lifecycle molecule-run-victor_staging awx molecule-run-victor_runbooks \
                   functional molecule-run-victor_backup_dr molecule-run-victor_monitoring molecule-run-victor_maintenance \
                   molecule-run-victor_deploy_process molecule-run-victor_certificates molecule-run-victor_logrotate \
                   molecule-run-victor_health
# unit (pure Python, the shortest stage) goes last.
TEST_STAGES     := $(ORDERED_STAGES) $(filter-out $(ORDERED_STAGES),$(addprefix molecule-run-,$(SCENARIOS))) lint sanity unit
# pytest's arguments for a tier: ARGS as given when one of them names a test file or directory
# (tests/unit/test_x.py, tests/unit/test_x.py::test_y), else the tier's directory, then ARGS
# (options only, e.g. ARGS='-k name' or ARGS=-x: pytest would otherwise collect the whole checkout).
is_test_path    = $(and $(or $(findstring /,$(1)),$(filter %.py,$(1))),$(wildcard $(1)))
tier_args       = $(if $(strip $(foreach a,$(filter-out -%,$(ARGS)),$(call is_test_path,$(firstword $(subst ::, ,$(a)))))),$(ARGS),$(1) $(ARGS))
# -rfEx: failures, errors, and the xfails' reasons (an ordered step not run says which step failed).
PYTEST          := pytest -q -rfEx

export PATH                     := $(VENV)/bin:$(PATH)
export ANSIBLE_COLLECTIONS_PATH := $(COLLECTIONS_DIR)
export MOLECULE_GLOB            := molecule/*/molecule.yml
# Downloaded once per machine (a fresh clone reuses it): containers cannot reach PyPI.
export VICTOR_OPS_WHEELHOUSE    ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/victor-ops/wheelhouse
export PY_COLORS                := 0
export ANSIBLE_FORCE_COLOR      := 0

host-packages:
	@$(STAGE) host-packages bash -c 'scripts/host_packages.sh 2>&1 | grep -v -e needrestart -e debconf; exit $${PIPESTATUS[0]}'

.PHONY: help test demo fuzz functional integration integration-deploy integration-services awx host-packages venv docker wheelhouse images collection lint sanity unit molecule molecule-dev molecule-destroy molecule-all bench-zero-downtime build clean

help:
	@sed -n '2,8p' Makefile

## The project's test command (what .ci/run calls).
test:
	@rm -rf .cache/stages.tsv .cache/logs
	@$(MAKE) --no-print-directory host-packages venv docker wheelhouse images collection
	@STAGE_LOG_ONLY=1 $(MAKE) --no-print-directory -k -j$(TEST_JOBS) $(TEST_STAGES); rc=$$?; \
	  awk -F '\t' '$$2 != 0 {print $$1 "\t" $$4}' .cache/stages.tsv | while IFS=$$'\t' read -r failed log; do \
	    printf '\n---- end of the failed stage "%s" (%s) ----\n' "$$failed" "$$log"; tail -n 60 "$$log"; done; \
	  printf '\nstage\texit\tseconds\tlog\n'; cat .cache/stages.tsv; \
	  if [ $$rc -eq 0 ]; then echo "make test: all stages passed"; else echo "make test: FAILED" >&2; fi; \
	  exit $$rc

## The main job on the embedded local default (finished by the maintenance issue).
demo:
	@scripts/demo.sh

venv: collection
	@$(STAGE) venv env PYTHON=$(PYTHON) scripts/venv.sh

docker:
	@$(STAGE) docker scripts/ensure_docker.sh

wheelhouse: venv
	@$(STAGE) wheelhouse bash -c 'scripts/build_wheelhouse.sh 2>&1 | grep -v "is ignored: it is neither"; exit $${PIPESTATUS[0]}'

images: docker wheelhouse
	@$(STAGE) images scripts/build_images.sh

## ansible-test and ansible-lint need the collection at .../ansible_collections/victor/ops.
collection:
	@mkdir -p $(dir $(COLLECTION_LINK))
	@ln -sfn $(CURDIR) $(COLLECTION_LINK)

lint: venv collection
	@$(STAGE) lint bash -c 'ansible-lint --profile production && antsibull-changelog lint'

sanity: venv collection
	@$(STAGE) sanity scripts/sanity.sh

## Unit tier: module_utils, modules, filters and templates in-process; no tool or service is started.
unit: venv collection
	@$(STAGE) unit bash -c 'cd $(COLLECTION_LINK) && $(PYTEST) --hypothesis-profile=ci $(call tier_args,tests/unit)'

## Functional tier: real tools on this host (ansible-playbook, ansible-builder, promtool, amtool, mtail,
## nginx -t, logrotate, systemd-analyze, redis-server, the SIGKILL backup harness); no docker.
functional: venv collection
	@$(STAGE) functional bash -c 'cd $(COLLECTION_LINK) && $(PYTEST) --hypothesis-profile=ci $(call tier_args,tests/functional)'

## Random-input tests with fresh examples (not part of make test: its runs must be reproducible).
fuzz: venv collection
	@$(STAGE) fuzz bash -c 'cd $(COLLECTION_LINK) && $(PYTEST) --hypothesis-profile=fuzz --hypothesis-show-statistics tests/unit/test_health_module.py'

## Tests against real services started on the host (PostgreSQL, Redis, moto, ansible-runner) and docker.
integration: venv collection
	@$(STAGE) integration bash -c 'cd $(COLLECTION_LINK) && $(PYTEST) $(call tier_args,tests/integration)'

integration-deploy: venv collection
	@$(STAGE) "integration deploy" bash -c 'cd $(COLLECTION_LINK) && $(PYTEST) $(INTEGRATION_DEPLOY)'

integration-services: venv collection
	@$(STAGE) "integration services" bash -c 'cd $(COLLECTION_LINK) && $(PYTEST) tests/integration $(addprefix --ignore=,$(INTEGRATION_DEPLOY))'

## A real AWX API server (built once per machine, cached; see docs/awx.md) and
## playbooks/awx_configure.yml against it.
awx: venv collection
	@$(STAGE) awx bash -c 'cd $(COLLECTION_LINK) && $(PYTEST) -s tests/awx'

## One scenario: make molecule SCENARIO=victor_health
molecule: venv collection
	@test -n "$(SCENARIO)" || { echo "usage: make molecule SCENARIO=<one of: $(SCENARIOS)>" >&2; exit 2; }
	@$(STAGE) "molecule $(SCENARIO)" molecule test -s $(SCENARIO)

## Iterate on one scenario: converge, then side_effect and verify in the order of the scenario's
## test_sequence (a scenario without side_effect: converge + verify), no destroy: the container stays
## (make molecule-destroy SCENARIO=... ends it).
molecule-dev: venv collection
	@test -n "$(SCENARIO)" || { echo "usage: make molecule-dev SCENARIO=<one of: $(SCENARIOS)>" >&2; exit 2; }
	@scripts/molecule_dev.sh $(SCENARIO)

molecule-destroy: venv collection
	@test -n "$(SCENARIO)" || { echo "usage: make molecule-destroy SCENARIO=<name>" >&2; exit 2; }
	molecule destroy -s $(SCENARIO)

## Every scenario (make -j2 molecule-all runs two at once: each has its own containers).
molecule-all: $(addprefix molecule-run-,$(SCENARIOS))

molecule-run-%: venv collection
	@$(STAGE) "molecule $*" molecule test -s $*

## Benchmark: the rolling deploy and the naive (no drain) baseline under the same load through nginx.
bench-zero-downtime: venv collection
	VICTOR_OPS_BENCH_NAIVE=1 molecule test -s victor_nginx_lb

build: venv
	ansible-galaxy collection build --force --output-path .cache/dist

clean:
	rm -rf .cache/collections .cache/dist tests/output .ansible
