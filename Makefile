PYTHON ?= python3

.PHONY: venv test demo

venv:
	test -x .venv/bin/python || $(PYTHON) -m venv .venv
	.venv/bin/python -m pip install -e '.[test]'

test:
	.venv/bin/python -m pytest -q

# The main job on this machine: a throwaway broker and FTP server, the worker, a batch of tasks.
demo: venv
	.venv/bin/python tests/demo/run.py

.PHONY: bench

# Benchmark ftp-pooler copy against rclone, lftp and an ftplib ceiling (needs root;
# see tests/bench/run.py --help; add ARGS=--quick for a smoke run)
bench:
	.venv/bin/python tests/bench/run.py $(ARGS)
