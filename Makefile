# The two set-up commands of the README. Each installs what it needs first (scripts/setup.sh is
# idempotent and takes about a second once everything is there).
.PHONY: setup search test benchmark
setup:
	bash scripts/setup.sh

search: setup
	.venv/bin/tuner search --model wenet

test: setup
	.venv/bin/python -m pytest -q -rs
