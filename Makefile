PYTHON ?= python3

.PHONY: venv lock image test lint demo check-deploy check-deploy-template

# Dependencies from the lock (hashes checked), then the project itself without dependencies.
venv:
	test -x .venv/bin/python || $(PYTHON) -m venv .venv
	.venv/bin/python -m pip install --require-hashes -r requirements/dev.lock
	.venv/bin/python -m pip install --no-deps --no-build-isolation -e .

# Re-pin every dependency, with hashes, after a change to pyproject.toml's dependencies
# (uv from PyPI: pip install uv). runtime.lock: the image; build.lock: the build backend;
# dev.lock: runtime + test + deploy extras + build backend, for .venv and CI.
UV ?= uv
LOCK = $(UV) pip compile --no-config --universal --python-version 3.11 --generate-hashes \
	--custom-compile-command "make lock"
lock:
	$(LOCK) pyproject.toml -o requirements/runtime.lock
	$(LOCK) requirements/build.in -o requirements/build.lock
	$(LOCK) pyproject.toml --extra test --extra deploy requirements/build.in -o requirements/dev.lock

# The container image, tagged with pyproject.toml's version (podman, or ENGINE=docker).
ENGINE ?= podman
VERSION = $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
image:
	$(ENGINE) build -f Containerfile -t ftp-pooler:$(VERSION) --build-arg VERSION=$(VERSION) \
		--build-arg REVISION="$$(git rev-parse HEAD)" .

test:
	.venv/bin/python -m pytest -q

# Style and types of the package (ruff, mypy --strict with the pydantic plugin).
lint:
	.venv/bin/ruff check src tests
	.venv/bin/ruff format --check src
	.venv/bin/mypy src

# Render and validate kubernetes/ offline, lint the Containerfile (tools: the deploy extra,
# promtool). Fails while the prod overlay still holds placeholders: the gate before a deploy.
check-deploy:
	bash kubernetes/validate.sh

# The same checks on the repository's prod overlay as a template: its placeholders are
# listed, not refused (CI).
check-deploy-template:
	ALLOW_PLACEHOLDERS=1 bash kubernetes/validate.sh

# The main job on this machine: a throwaway broker and FTP server, the worker, a batch of tasks.
demo: venv
	.venv/bin/python tests/demo/run.py

.PHONY: bench

# Benchmark ftp-pooler copy against rclone, lftp and an ftplib ceiling (needs root;
# see tests/bench/run.py --help; add ARGS=--quick for a smoke run)
bench:
	.venv/bin/python tests/bench/run.py $(ARGS)

.PHONY: bench-kafka

# The worker's Kafka path alone, without FTP: tasks/s and CPU per task by thread
# (tests/bench/kafka_path.py; no root needed)
bench-kafka:
	.venv/bin/python tests/bench/kafka_path.py $(ARGS)
