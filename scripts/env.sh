# Sourced by the Makefile: environment shared by tests and the local stack.
export HF_HUB_OFFLINE=1
export BKG_REPO_ROOT="${BKG_REPO_ROOT:-$(pwd)}"
export BKG_TEST_MINILM_DIR="${BKG_TEST_MINILM_DIR:-$BKG_REPO_ROOT/.tools/all-MiniLM-L6-v2}"
export PATH="$BKG_REPO_ROOT/.tools/bin:$BKG_REPO_ROOT/.tools/venv/bin:$PATH"
export HF_HOME="${HF_HOME:-$BKG_REPO_ROOT/.tools/huggingface}"
