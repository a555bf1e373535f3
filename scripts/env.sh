# Sourced by the Makefile: environment shared by tests and the local stack.
export HF_HUB_OFFLINE=1
export BKG_REPO_ROOT="${BKG_REPO_ROOT:-$(pwd)}"
