#!/usr/bin/env bash
# A free-threaded CPython (built with --disable-gil) for testing fastserver,
# built from source on a Debian machine whose only network access is the
# package registries.  Prints the interpreter's path as its one line of
# stdout; progress and errors go to stderr:
#
#   python=$(tools/freethreaded-python.sh)
#   "$python" -m venv /tmp/venv-ft
#
# The first run takes 3-5 minutes on two cores (the build); later runs only
# check the cached interpreter and take well under a second.
#
# How:
# 1. The CPython tarball comes from Debian's source package pythonX.Y: its
#    pythonX.Y_<version>.orig.tar.xz is the python.org release tarball
#    unchanged.  `apt-get source --download-only` fetches it through a
#    private apt configuration (its own sources list, state, cache and
#    lists in a temporary directory), so the machine's apt settings and
#    state are never touched; the machine's apt.conf.d still applies, so a
#    proxy configured there is used.  The mirror is the one the machine's
#    own sources use for its Debian release (else deb.debian.org).  Apt
#    checks the suite's Release signature with Signed-By (the
#    debian-archive-keyring of bookworm already holds the keys that sign
#    trixie, forky and sid) and the tarball against the signed index; the
#    script then checks the tarball's SHA-256 against python-build's
#    definition (the python.org value), or the value pinned below.
# 2. pyenv's python-build builds definition <version>t (free-threaded)
#    offline from a cache directory holding the tarball under the name it
#    expects (Python-<version>.tar.xz).  If this pyenv has no such
#    definition, the script writes an equivalent one (same build steps,
#    --disable-gil) with the checksum of the tarball it verified.
#    Missing build dependencies (libssl-dev, zlib1g-dev, ...) are installed
#    with apt-get from the machine's normal configuration when run as root.
# 3. The result is installed in a stable prefix and marked complete only
#    when the build succeeded; a lock (flock) serialises concurrent runs.
#
# Settings (environment variables):
#   FASTSERVER_FT_VERSION    CPython version (default 3.13.5).  Changing it is
#                            enough to build another one, e.g. 3.14.10: the
#                            Debian source package (python3.14) and the
#                            suites to look in follow from it.
#   FASTSERVER_FT_SUITES     Debian suites to look in (default: trixie for
#                            3.13, "forky sid" for later minors).  Debian
#                            keeps only recent versions of a source package:
#                            the error message lists the ones available.
#   FASTSERVER_PYTHON_CACHE  where results live (default ~/.cache/fastserver):
#                            <cache>/python-<version>t is the prefix,
#                            <cache>/downloads the tarballs,
#                            <cache>/python-<version>t-build.log the last
#                            build's log.  Delete the prefix to rebuild.
#   FASTSERVER_FT_MIRROR     Debian mirror URL (default: the machine's own).
#   FASTSERVER_FT_KEYRING    keyring for the suites' signatures (default
#                            /usr/share/keyrings/debian-archive-keyring.gpg).
#   FASTSERVER_PYTHON_BUILD  python-build (default: pyenv's).
#
# The interpreter is <prefix>/bin/python<X.Y>t.
set -euo pipefail

version=${FASTSERVER_FT_VERSION:-3.13.5}
cache=${FASTSERVER_PYTHON_CACHE:-${HOME:?HOME is not set; set FASTSERVER_PYTHON_CACHE}/.cache/fastserver}
keyring=${FASTSERVER_FT_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}
python_build=${FASTSERVER_PYTHON_BUILD:-${PYENV_ROOT:-$HOME/.pyenv}/plugins/python-build/bin/python-build}

# SHA-256 of python.org's Python-<version>.tar.xz, written down when pyenv's
# definition and Debian's signed index were seen to agree on it: a check
# that holds even if a later pyenv or Debian index were wrong.
declare -A pinned_sha256=(
    [3.13.5]=93e583f243454e6e9e4588ca2c2662206ad961659863277afcdb96801647d640
)

say() { echo "freethreaded-python: $*" >&2; }
die() { say "error: $*"; exit 1; }
# Anything failing that has no message of its own says where.
trap 'say "error: failed at line $LINENO: $BASH_COMMAND"' ERR

[[ $version =~ ^([0-9]+)\.([0-9]+)\.[0-9]+((a|b|rc)[0-9]+)?$ ]] \
    || die "FASTSERVER_FT_VERSION=$version is not a CPython version such as 3.13.5"
minor="${BASH_REMATCH[1]}.${BASH_REMATCH[2]}"
(( BASH_REMATCH[1] == 3 && BASH_REMATCH[2] >= 13 )) \
    || die "free-threaded builds exist from CPython 3.13 on, not $version"
if [ "$minor" = 3.13 ]; then
    suites=${FASTSERVER_FT_SUITES:-trixie}
else
    suites=${FASTSERVER_FT_SUITES:-forky sid}
fi
srcpkg="python$minor"
# Debian spells pre-releases with a tilde: 3.14.0rc1 is 3.14.0~rc1.
deb_upstream=$(sed -E 's/([0-9])(a|b|rc)([0-9])/\1~\2\3/' <<<"$version")
prefix="$cache/python-${version}t"
python="$prefix/bin/python${minor}t"
stamp="$prefix/.fastserver-complete"

# The check of a cached (or new) interpreter: it runs, and the GIL is off.
# -I and env -u: a PYTHON_GIL=1 or PYTHONPATH of the caller must not decide.
works() {
    [ -x "$python" ] && env -u PYTHON_GIL -u PYTHONHOME -u PYTHONPATH \
        "$python" -I -c 'import sys, sysconfig
assert sysconfig.get_config_var("Py_GIL_DISABLED"), "not a free-threaded build"
assert not sys._is_gil_enabled(), "the GIL is enabled"' >&2
}
# A cached interpreter: the stamp is written once the build succeeded and
# its interpreter passed works(), so a prefix without it is unfinished.
check() { [ -f "$stamp" ] && works; }

# The cached interpreter, without waiting for the lock.
if check 2>/dev/null; then
    echo "$python"
    exit 0
fi

mkdir -p "$cache/downloads" || die "cannot create $cache (set FASTSERVER_PYTHON_CACHE)"
exec 9>"$cache/python-${version}t.lock"
if ! flock -n 9; then
    say "another run is building $version into $prefix; waiting for it"
    flock 9
fi
# The run we waited for may have built it.
if check 2>/dev/null; then
    echo "$python"
    exit 0
fi
if [ -e "$prefix" ]; then
    say "$prefix is incomplete or broken (an interrupted build?); removing it and rebuilding"
    rm -rf "$prefix"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/fastserver-ftpython.XXXXXX")
build_pid=""
cleanup() {
    # An interrupted build: stop all of it (make and the compilers too, in
    # the build's own process group), not just python-build, and drop the
    # unfinished prefix.
    if [ -n "$build_pid" ]; then
        kill -TERM -- "-$build_pid" 2>/dev/null || true
        wait "$build_pid" 2>/dev/null || true
        [ -f "$stamp" ] || rm -rf "$prefix"
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'say "interrupted; stopping and cleaning up"; exit 130' INT
trap 'say "terminated; stopping and cleaning up"; exit 143' TERM
# apt downloads as the unprivileged _apt user: it must be able to reach
# the directories it writes to (mktemp makes them 0700).
chmod 755 "$work"

# --- build dependencies --------------------------------------------------
# What CPython's configure needs to build the modules a test run uses:
# ssl and zlib (python-build refuses an interpreter without them), ctypes,
# bz2, lzma, sqlite3, readline, curses, uuid.  Tk is left out on purpose.
deps=(build-essential pkg-config xz-utils libssl-dev zlib1g-dev libffi-dev libbz2-dev
      liblzma-dev libsqlite3-dev libreadline-dev libncurses-dev uuid-dev)
missing=()
for p in "${deps[@]}"; do
    # Captured, not piped into grep -q: with pipefail an early grep exit
    # could make an installed package look missing.
    state=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [ "$state" = "install ok installed" ] || missing+=("$p")
done
if ((${#missing[@]})); then
    if [ "$(id -u)" -ne 0 ]; then
        die "build dependencies missing: ${missing[*]}; install them (sudo apt-get install ${missing[*]}) and run again"
    fi
    say "installing the missing build dependencies with apt-get: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends "${missing[@]}" >&2; then
        say "apt-get install failed; updating the machine's package lists and retrying"
        apt-get update >&2 && apt-get install -y --no-install-recommends "${missing[@]}" >&2 \
            || die "could not install ${missing[*]} with apt-get; install them and run again"
    fi
fi

# --- python-build and its definition ---------------------------------------
[ -x "$python_build" ] \
    || die "python-build not found at $python_build; install pyenv (https://github.com/pyenv/pyenv) or set FASTSERVER_PYTHON_BUILD"
defdir="$(dirname "$python_build")/../share/python-build"
definition="${version}t"
expected=""
if [ -f "$defdir/$definition" ]; then
    # The t definition sources the plain one, which holds the checksum.
    expected=$(grep -ohE "Python-${version//./\\.}\.tar\.xz#[0-9a-f]{64}" \
                   "$defdir/$definition" "$defdir/$version" 2>/dev/null | head -n 1 | cut -d'#' -f2 || true)
else
    say "this pyenv has no definition $definition; the script writes one"
    definition=""
fi
pinned=${pinned_sha256[$version]:-}
if [ -n "$expected" ] && [ -n "$pinned" ] && [ "$expected" != "$pinned" ]; then
    die "python-build's definition gives SHA-256 $expected for Python-$version.tar.xz, this script pins $pinned; one of them is wrong, check https://www.python.org/downloads/release/"
fi
expected=${expected:-$pinned}

# --- the source tarball -----------------------------------------------------
tarball="$cache/downloads/Python-$version.tar.xz"
if [ -f "$tarball" ] && [ -n "$expected" ] \
        && [ "$(sha256sum "$tarball" | cut -d' ' -f1)" = "$expected" ]; then
    say "reusing $tarball"
else
    command -v apt-get >/dev/null || die "apt-get not found: this script fetches CPython from Debian's archive"
    [ -r "$keyring" ] || die "keyring $keyring not found; install debian-archive-keyring or set FASTSERVER_FT_KEYRING"

    # The machine's Debian mirror: the URI its own sources use for its
    # release (a proxy or local mirror if it has one), else deb.debian.org.
    mirror=${FASTSERVER_FT_MIRROR:-}
    if [ -z "$mirror" ]; then
        codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
        mirror=$({ cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true; } |
                 awk -v c="$codename" '$1 == "deb" { sub(/\[[^]]*\]/, ""); if ($3 == c && $2 ~ /\/debian\/?$/) { print $2; exit } }')
        if [ -z "$mirror" ]; then
            # deb822 .sources: a stanza whose Suites has the release and
            # whose URIs end in /debian.
            mirror=$({ cat /etc/apt/sources.list.d/*.sources 2>/dev/null || true; } | awk -v c="$codename" '
                /^[[:space:]]*$/ { if (u != "" && s) { print u; found = 1; exit } u = ""; s = 0; next }
                /^URIs:/ { for (i = 2; i <= NF; i++) if ($i ~ /\/debian\/?$/) { u = $i; break } }
                /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == c) s = 1 }
                END { if (!found && u != "" && s) print u }')
        fi
        mirror=${mirror:-http://deb.debian.org/debian}
    fi
    mirror=${mirror%/}

    apt_dir="$work/apt"
    mkdir -p "$apt_dir/etc/sources.list.d" "$apt_dir/etc/preferences.d" \
             "$apt_dir/state/lists/partial" "$apt_dir/cache/archives/partial" "$work/src"
    : >"$apt_dir/status"
    cat >"$apt_dir/etc/sources.list.d/fastserver-ft.sources" <<EOF
Types: deb-src
URIs: $mirror
Suites: $suites
Components: main
Signed-By: $keyring
EOF
    # Everything apt reads or writes for sources and state is private; the
    # machine's apt.conf.d (proxy, timeouts) still applies.
    apt_opts=(
        -o "Dir::State=$apt_dir/state"
        -o "Dir::State::status=$apt_dir/status"
        -o "Dir::Cache=$apt_dir/cache"
        -o "Dir::Etc::SourceList=/dev/null"
        -o "Dir::Etc::SourceParts=$apt_dir/etc/sources.list.d"
        -o "Dir::Etc::Preferences=/dev/null"
        -o "Dir::Etc::PreferencesParts=$apt_dir/etc/preferences.d"
    )
    if id _apt >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
        chown -R _apt "$apt_dir/state/lists/partial" "$apt_dir/cache/archives/partial" "$work/src"
    fi

    say "fetching the index of Debian's $suites sources from $mirror"
    if ! apt-get "${apt_opts[@]}" --error-on=any update >"$work/apt-update.log" 2>&1; then
        cat "$work/apt-update.log" >&2
        if grep -qE 'NO_PUBKEY|EXPKEYSIG|not signed|signature' "$work/apt-update.log"; then
            die "apt could not verify the $suites Release file with $keyring (above); install a newer debian-archive-keyring (from bookworm-updates or a later release), or set FASTSERVER_FT_KEYRING to a keyring that holds the signing key"
        fi
        die "apt-get update of $suites from $mirror failed (above); check the network/proxy, or set FASTSERVER_FT_MIRROR"
    fi
    grep -E '^(W|E):' "$work/apt-update.log" >&2 || true

    # The Debian version whose upstream part is ours, e.g. 3.13.5-2+deb13u5.
    available=$(apt-cache "${apt_opts[@]}" showsrc "$srcpkg" 2>/dev/null | awk '/^Version:/ { print $2 }' | sort -u)
    debver=$(grep -E "^([0-9]+:)?${deb_upstream//./\\.}-" <<<"$available" | sort -V | tail -n 1 || true)
    if [ -z "$debver" ]; then
        if [ -z "$available" ]; then
            die "Debian's $suites has no source package $srcpkg; set FASTSERVER_FT_SUITES to a suite that has it (e.g. sid)"
        fi
        die "Debian's $suites has $srcpkg only in versions: $(tr '\n' ' ' <<<"$available")- set FASTSERVER_FT_VERSION to one of those upstream versions, or FASTSERVER_FT_SUITES to a suite that has $version"
    fi

    say "downloading $srcpkg $debver (CPython $version source)"
    (cd "$work/src" && apt-get "${apt_opts[@]}" source --download-only "$srcpkg=$debver" >"$work/apt-source.log" 2>&1) || {
        cat "$work/apt-source.log" >&2
        if grep -q '404' "$work/apt-source.log"; then
            die "$mirror lists $srcpkg $debver but does not serve its files (404 above: a partial mirror or proxy?); set FASTSERVER_FT_MIRROR to a full Debian mirror, or FASTSERVER_FT_VERSION to a version it has"
        fi
        die "apt-get source of $srcpkg=$debver failed (above)"
    }
    orig="$work/src/${srcpkg}_${deb_upstream}.orig.tar.xz"
    [ -f "$orig" ] || die "the source package $srcpkg $debver has no ${orig##*/} (Debian repacked the upstream tarball?); this script needs the unchanged python.org tarball"
    actual=$(sha256sum "$orig" | cut -d' ' -f1)
    if [ -z "$expected" ]; then
        # Neither python-build nor this script knows the release: apt has
        # verified the tarball against the signed Debian index; trust that.
        say "no known SHA-256 for Python-$version.tar.xz; using the one Debian's signed index vouches for: $actual"
        expected=$actual
    elif [ "$actual" != "$expected" ]; then
        die "${orig##*/} has SHA-256 $actual, python.org's Python-$version.tar.xz has $expected: Debian's tarball is not the upstream one; do not build it"
    fi
    # A copy, not mv: the download belongs to _apt.
    cp "$orig" "$tarball.part" && mv "$tarball.part" "$tarball"
fi

if [ -z "$definition" ]; then
    # The definition this pyenv lacks, written as pyenv's own are: the same
    # build steps as 3.13.5t.  The URL is never fetched (the tarball is in
    # the cache with this checksum); python-build needs one to name it.
    definition="$work/${version}t"
    verify="verify_py${minor/./}"
    grep -q "^build_package_${verify}()" "$python_build" || verify=""
    cat >"$definition" <<EOF
export PYTHON_BUILD_FREE_THREADING=1
export PYTHON_BUILD_CONFIGURE_WITH_OPENSSL=1
export PYTHON_BUILD_TCLTK_USE_PKGCONFIG=1
install_package "Python-$version" "https://www.python.org/ftp/python/${version%%[abr]*}/Python-$version.tar.xz#$expected" standard $verify copy_python_gdb ensurepip
EOF
    if ! grep -q 'PYTHON_BUILD_FREE_THREADING' "$python_build"; then
        # A python-build older than its free-threading switch.
        export PYTHON_CONFIGURE_OPTS="${PYTHON_CONFIGURE_OPTS:+$PYTHON_CONFIGURE_OPTS }--disable-gil"
    fi
fi

# --- the build ---------------------------------------------------------------
say "building CPython ${version}t into $prefix (3-5 minutes on 2 cores; log: $cache/python-${version}t-build.log)"
log="$cache/python-${version}t-build.log"
rm -f "$log"
# Offline by construction: the tarball is in the cache with the checksum
# the definition expects; python-build has no switch to forbid downloads,
# so its mirror is off and its HTTP client is one that does not exist: any
# download it might still attempt fails at once instead of reaching out.
# The build runs niced: the machine's cores are shared.
# It runs as a job in its own process group (set -m) so that an interrupt
# or kill of this script can stop the whole build (cleanup above); `wait`
# also lets the INT/TERM traps run at once instead of after the build.
status=0
set -m
env TMPDIR="$work" PYTHON_BUILD_CACHE_PATH="$cache/downloads" \
    PYTHON_BUILD_SKIP_MIRROR=1 PYTHON_BUILD_HTTP_CLIENT=none-offline \
    nice -n 10 "$python_build" "$definition" "$prefix" >&2 &
build_pid=$!
set +m
wait "$build_pid" || status=$?
build_pid=""
# python-build keeps its log in TMPDIR (our work directory): save it.
for f in "$work"/python-build.*.log; do
    if [ -f "$f" ]; then cp "$f" "$log"; fi
done
if [ "$status" -ne 0 ]; then
    rm -rf "$prefix"
    [ -f "$log" ] && tail -n 30 "$log" >&2
    die "python-build failed (exit $status); the full log is $log"
fi

works || { rm -rf "$prefix"; die "the new interpreter $python failed its check (above); log: $log"; }
echo "CPython $version free-threaded, from $tarball (SHA-256 $expected)" >"$stamp"
say "done: $python"
echo "$python"
