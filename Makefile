PYTHON ?= python3

.PHONY: venv test lint demo check-deploy

venv:
	test -x .venv/bin/python || $(PYTHON) -m venv .venv
	.venv/bin/python -m pip install -e '.[test]'

test:
	.venv/bin/python -m pytest -q

# Style and types of the package (ruff, mypy --strict with the pydantic plugin).
lint:
	.venv/bin/ruff check src
	.venv/bin/ruff format --check src
	.venv/bin/mypy src

# Render and validate kubernetes/ offline, lint the Containerfile (tools: the deploy extra, promtool).
check-deploy:
	bash kubernetes/validate.sh

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
