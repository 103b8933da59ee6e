#!/usr/bin/env bash
# Installs what espnet-gmot's demo and tests need, idempotently:
#   - Debian packages: espeak-ng and sox (speech), sctk (sclite), a CJK font
#     (heat-map labels), shellcheck (recipe lint); only when missing, as root;
#   - a Python virtual environment with ESPnet and this package (editable), using
#     the tested combination of the ESPnet release asked for;
#   - sclite on the environment's PATH: a link in its bin/ (Debian's sctk puts
#     sclite off PATH), so recipes and tests find it with `command -v sclite`.
#
# Usage: tools/install.sh [--espnet 202511|202611]   (then: source "$ESPNET_GMOT_VENV/bin/activate")
#   --espnet 202511 (default): Python 3.11, tools/constraints.txt, venv
#       $ESPNET_GMOT_VENV (default <repo>/.venv). The demo and the tests use it.
#   --espnet 202611: ESPnet's current release, tools/constraints-espnet202611.txt,
#       venv $ESPNET_GMOT_VENV (default <repo>/.venv-espnet202611). Python:
#       $PYTHON, else python3.12/python3.13 on PATH or under pyenv, else
#       python3. On Python 3.11 it installs forced past ESPnet's python_requires
#       (pip --ignore-requires-python, the constraints holding back scipy and
#       av, whose newer releases need 3.12): such a venv tests the plugin's
#       code against 202611's modules, it is not a supported setup.
# A complete environment is recognised by a stamp in the venv (a digest of this
# script, setup.py, the constraints file and the Python version), written after
# a successful install; with it, the Debian packages and sclite's link present,
# the script returns at once. ESPNET_GMOT_REINSTALL=1 installs anyway.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
espnet_release=202511
while [ $# -gt 0 ]; do
    case "$1" in
        --espnet) espnet_release=${2:-}; shift 2 ;;
        *) echo "install.sh: unknown option $1 (usage: tools/install.sh [--espnet 202511|202611])" >&2; exit 2 ;;
    esac
done

# $PYTHON if set, else the first Python 3.12 or 3.13 (ESPnet 202611's range)
# on PATH or under pyenv, else nothing.
find_python_for_202611() {
    if [ -n "${PYTHON:-}" ]; then
        echo "${PYTHON}"
        return
    fi
    local candidate
    for candidate in python3.12 python3.13 \
            "$(pyenv root 2>/dev/null)"/versions/3.12*/bin/python3 \
            "$(pyenv root 2>/dev/null)"/versions/3.13*/bin/python3; do
        if "${candidate}" -c 'import sys, venv; sys.exit(not (3, 12) <= sys.version_info[:2] < (3, 14))' \
                2> /dev/null; then
            echo "${candidate}"
            return
        fi
    done
}

forced_pip_args=()
case "${espnet_release}" in
    202511)
        venv=${ESPNET_GMOT_VENV:-${repo}/.venv}
        constraints=${repo}/tools/constraints.txt
        python=${PYTHON:-python3}
        # Exactly 3.11: the constraints are the set tested on 3.11 (espnet
        # 202511 is the last release for it; its torchaudio, scipy and numpy
        # need >= 3.11).
        python_check='sys.version_info[:2] == (3, 11)'
        python_wanted="Python 3.11" ;;
    202611)
        venv=${ESPNET_GMOT_VENV:-${repo}/.venv-espnet202611}
        constraints=${repo}/tools/constraints-espnet202611.txt
        python=$(find_python_for_202611)
        python=${python:-python3}
        python_check='(3, 11) <= sys.version_info[:2] < (3, 14)'
        python_wanted="Python 3.12 or 3.13 (or 3.11, forced)"
        if "${python}" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2> /dev/null; then
            forced_pip_args=(--ignore-requires-python --prefer-binary)
        fi ;;
    *)
        echo "install.sh: --espnet ${espnet_release}: choose 202511 or 202611" >&2
        exit 2 ;;
esac
stamp=${venv}/.espnet-gmot-installed

debian_packages="espeak-ng sox sctk fonts-wqy-zenhei shellcheck"
missing=""
for package in ${debian_packages}; do
    dpkg-query -W -f='${Status}' "${package}" 2>/dev/null | grep -q "install ok installed" \
        || missing="${missing} ${package}"
done

install_digest() {
    { cat "${repo}/tools/install.sh" "${repo}/setup.py" "${constraints}"
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

if ! "${python}" -c "import sys; sys.exit(not (${python_check}))"; then
    echo "install.sh: ${python} is not ${python_wanted}, which ${constraints#"${repo}"/} was" \
         "tested with (set PYTHON=/path/to/python)" >&2
    exit 1
fi
if [ ${#forced_pip_args[@]} -gt 0 ]; then
    echo "install.sh: installing ESPnet 202611 on $("${python}" -V 2>&1), forced past its" \
         "python_requires (no Python 3.12 or 3.13 found, or PYTHON chose 3.11)" >&2
fi
if [ ! -x "${venv}/bin/python" ]; then
    echo "install.sh: creating ${venv}"
    "${python}" -m venv "${venv}"
fi
# pip 26 refuses espnet's direct-URL dependency ci_sdr.
"${venv}/bin/python" -m pip install -q "pip<26"
echo "install.sh: installing ESPnet ${espnet_release} and espnet-gmot into ${venv} (a few minutes the first time)"
"${venv}/bin/python" -m pip install -q "${forced_pip_args[@]}" -c "${constraints}" \
    "espnet==${espnet_release}" torch torchaudio -e "${repo}[test,demo]"
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
