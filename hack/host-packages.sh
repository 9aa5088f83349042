# Sourced by build scripts: ensure_host_packages PKG... installs the Debian packages that are
# missing (as root, with apt-get), or says which to install.
ensure_host_packages() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "${pkg}" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("${pkg}")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    if [[ "$(id -u)" -ne 0 ]]; then
        echo "missing Debian packages: ${missing[*]} (apt-get install ${missing[*]})" >&2
        return 1
    fi
    # One installer at a time: `make test` installs its packages while the test bed builds in
    # the background, and a second apt-get refuses to run ("Could not get lock").
    (
        flock -w 900 9 || { echo "host packages: another install holds the lock" >&2; exit 1; }
        printf '%s host packages: installing %s\n' "$(date -u +%H:%M:%S)" "${missing[*]}" >&2
        apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
            --no-install-recommends "${missing[@]}" >&2
    ) 9>/run/lock/lipsync-host-packages.lock
}
