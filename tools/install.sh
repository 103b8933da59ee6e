#!/usr/bin/env bash
# Installs what espnet-gmot's demo and tests need, idempotently:
#   - Debian packages: espeak-ng and sox (speech), sctk (sclite), a CJK font
#     (heat-map labels), shellcheck (recipe lint); only when missing, as root;
#   - a Python virtual environment with ESPnet and this package (editable), using
#     the tested combination in tools/constraints.txt;
#   - sclite on the environment's PATH: a link in its bin/ (Debian's sctk puts
#     sclite off PATH), so recipes and tests find it with `command -v sclite`.
# The environment lives in $ESPNET_GMOT_VENV (default: <repo>/.venv).
# A complete environment is recognised by a stamp in the venv (a digest of this
# script, setup.py, tools/constraints.txt and the Python version), written after
# a successful install; with it, the Debian packages and sclite's link present,
# the script returns at once. ESPNET_GMOT_REINSTALL=1 installs anyway.
# Usage: tools/install.sh   (then: source "$ESPNET_GMOT_VENV/bin/activate")
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
venv=${ESPNET_GMOT_VENV:-${repo}/.venv}
python=${PYTHON:-python3}
stamp=${venv}/.espnet-gmot-installed

debian_packages="espeak-ng sox sctk fonts-wqy-zenhei shellcheck"
missing=""
for package in ${debian_packages}; do
    dpkg-query -W -f='${Status}' "${package}" 2>/dev/null | grep -q "install ok installed" \
        || missing="${missing} ${package}"
done

install_digest() {
    { cat "${repo}/tools/install.sh" "${repo}/setup.py" "${repo}/tools/constraints.txt"
      "${venv}/bin/python" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1
}
if [ -z "${missing}" ] && [ "${ESPNET_GMOT_REINSTALL:-0}" != 1 ] && [ -f "${stamp}" ] \
        && [ -x "${venv}/bin/python" ] && [ -e "${venv}/bin/sclite" ] \
        && [ "$(cat "${stamp}")" = "$(install_digest)" ]; then
    echo "install.sh: ${venv} is complete (ESPNET_GMOT_REINSTALL=1 to reinstall)"
    exit 0
fi
rm -f "${stamp}"  # written again only when this install succeeds

if [ -n "${missing}" ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get > /dev/null; then
        echo "install.sh: apt-get install${missing}"
        apt-get update -qq
        # shellcheck disable=SC2086
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ${missing} > /dev/null
    else
        echo "install.sh: please install these Debian packages:${missing}" >&2
        exit 1
    fi
fi

# Exactly 3.11: tools/constraints.txt is the set tested on 3.11. Its torchaudio,
# scipy and numpy need >= 3.11 (setup.py's python_requires), and espnet 202511
# needs <= 3.11.
if ! "${python}" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "install.sh: ${python} is not Python 3.11 (the tested set in tools/constraints.txt;" \
         "set PYTHON=/path/to/python3.11)" >&2
    exit 1
fi
if [ ! -x "${venv}/bin/python" ]; then
    echo "install.sh: creating ${venv}"
    "${python}" -m venv "${venv}"
fi
# pip 26 refuses espnet's direct-URL dependency ci_sdr.
"${venv}/bin/python" -m pip install -q "pip<26"
echo "install.sh: installing ESPnet and espnet-gmot into ${venv} (a few minutes the first time)"
"${venv}/bin/python" -m pip install -q -c "${repo}/tools/constraints.txt" \
    torch torchaudio -e "${repo}[test,demo]"
"${venv}/bin/python" -m pip check
# Ask dpkg where sctk put sclite rather than hard-coding its directory.
if [ ! -e "${venv}/bin/sclite" ]; then
    sclite=$(command -v sclite || dpkg-query -L sctk 2>/dev/null | grep -m 1 '/bin/sclite$' || true)
    if [ -z "${sclite}" ]; then
        echo "install.sh: sclite not found although sctk is installed" >&2
        exit 1
    fi
    ln -sf "${sclite}" "${venv}/bin/sclite"
fi
install_digest > "${stamp}"
