# victor.ops — one entry point for setup, tests and the local demo.
#   make test      everything CI runs (venv, docker, images, wheelhouse, lint, sanity, unit, molecule)
#   make demo      the main job (monthly maintenance) on the embedded local default
# Quicker targets: make lint | sanity | unit | integration | molecule SCENARIO=<name> | images | wheelhouse

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV            := $(CURDIR)/.venv
PYTHON          ?= python3
STAGE           := scripts/stage.sh
COLLECTIONS_DIR := $(CURDIR)/.cache/collections
COLLECTION_LINK := $(COLLECTIONS_DIR)/ansible_collections/victor/ops
SCENARIOS       := $(sort $(notdir $(patsubst %/molecule.yml,%,$(wildcard molecule/*/molecule.yml))))

export PATH                     := $(VENV)/bin:$(PATH)
export ANSIBLE_COLLECTIONS_PATH := $(COLLECTIONS_DIR)
export MOLECULE_GLOB            := molecule/*/molecule.yml
export VICTOR_OPS_WHEELHOUSE    := $(CURDIR)/.cache/wheelhouse
export PY_COLORS                := 0
export ANSIBLE_FORCE_COLOR      := 0

host-packages:
	@$(STAGE) host-packages bash -c 'scripts/host_packages.sh 2>&1 | grep -v -e needrestart -e debconf; exit $${PIPESTATUS[0]}'

.PHONY: help test demo fuzz integration awx host-packages venv docker wheelhouse images collection lint sanity unit molecule molecule-all build clean

help:
	@sed -n '2,5p' Makefile

## The project's test command (what .ci/run calls).
test:
	@rm -rf .cache/stages.tsv .cache/logs
	@$(MAKE) --no-print-directory host-packages venv docker wheelhouse images collection
	@$(MAKE) --no-print-directory -k lint sanity unit integration awx molecule-all; rc=$$?; \
	  awk -F '\t' '$$2 != 0 {print $$1 "\t" $$4}' .cache/stages.tsv | while IFS=$$'\t' read -r failed log; do \
	    printf '\n---- end of the failed stage "%s" (%s) ----\n' "$$failed" "$$log"; tail -n 60 "$$log"; done; \
	  printf '\nstage\texit\tseconds\tlog\n'; cat .cache/stages.tsv; \
	  if [ $$rc -eq 0 ]; then echo "make test: all stages passed"; else echo "make test: FAILED" >&2; fi; \
	  exit $$rc

## The main job on the embedded local default (finished by the maintenance issue).
demo:
	@scripts/demo.sh

venv: $(VENV)/.installed
$(VENV)/.installed: requirements-dev.txt
	@$(STAGE) venv bash -c '$(PYTHON) -m venv $(VENV) && $(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt 2>&1 | grep -v "is ignored: it is neither" ; exit $${PIPESTATUS[0]}'
	@touch $@

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
	@$(STAGE) lint ansible-lint --profile production

sanity: venv collection
	@$(STAGE) sanity scripts/sanity.sh

unit: venv collection
	@$(STAGE) unit bash -c 'cd $(COLLECTION_LINK) && pytest -q -rfE --hypothesis-profile=ci tests/unit'

## Random-input tests with fresh examples (not part of make test: its runs must be reproducible).
fuzz: venv collection
	@$(STAGE) fuzz bash -c 'cd $(COLLECTION_LINK) && pytest -q -rfE --hypothesis-profile=fuzz --hypothesis-show-statistics tests/unit/test_health_module.py'

## Tests against real services started on the host (PostgreSQL, Redis, moto, ansible-runner).
integration: venv collection
	@$(STAGE) integration bash -c 'cd $(COLLECTION_LINK) && pytest -q -rfE tests/integration'

## A real AWX API server (built once per machine, cached; see docs/awx.md) and
## playbooks/awx_configure.yml against it.
awx: venv collection
	@$(STAGE) awx bash -c 'cd $(COLLECTION_LINK) && pytest -q -rfE -s tests/awx'

## One scenario: make molecule SCENARIO=victor_deploy
molecule: venv collection
	@test -n "$(SCENARIO)" || { echo "usage: make molecule SCENARIO=<one of: $(SCENARIOS)>" >&2; exit 2; }
	@$(STAGE) "molecule $(SCENARIO)" molecule test -s $(SCENARIO)

molecule-all: venv collection
	@rc=0; for s in $(SCENARIOS); do $(STAGE) "molecule $$s" molecule test -s $$s || rc=1; done; exit $$rc

build: venv
	ansible-galaxy collection build --force --output-path .cache/dist

clean:
	rm -rf .cache/collections .cache/dist tests/output .ansible
