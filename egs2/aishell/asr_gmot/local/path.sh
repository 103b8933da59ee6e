# shellcheck shell=bash
# Site-specific environment, sourced last by ../path.sh (from the recipe dir).
# Example: use your own virtualenv that has espnet and espnet_gmot installed
# instead of ESPnet's tools/ environment:
#     . /path/to/venv/bin/activate
