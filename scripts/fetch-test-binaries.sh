#!/usr/bin/env bash
# Fetch the foreign-architecture binaries the sandbox's binfmt_misc tests need, from the
# Debian mirror this machine's apt is configured with, without changing apt or dpkg:
#   - qemu-aarch64-static  (usr/bin/qemu-aarch64-static of bookworm's qemu-user-static, amd64)
#   - an aarch64 program   (bin/busybox of bookworm's busybox-static, arm64)
#
# Chain of trust: dists/SUITE/InRelease is checked with gpgv against the keyring apt uses
# (Signed-By of the source, else debian-archive-keyring), Packages.xz against the SHA256 in
# InRelease, each .deb against the SHA256 in Packages.xz.
#
# Output: on stdout, two `export VAR=path` lines for `eval "$(scripts/fetch-test-binaries.sh)"`;
# progress on stderr. Files are cached (and reused offline) in
#   $HB_TEST_BINARIES_DIR, default ${XDG_CACHE_HOME:-$HOME/.cache}/hb-test-binaries (without
#   HOME: target/test-binaries of this repository), with SHA256SUMS of the two binaries.
# Options: --refresh (download again even when cached).
set -euo pipefail

SUITE=bookworm
COMPONENT=main
if [ -n "${HB_TEST_BINARIES_DIR:-}" ]; then
  cache=$HB_TEST_BINARIES_DIR
elif [ -n "${XDG_CACHE_HOME:-}" ] || [ -n "${HOME:-}" ]; then
  cache="${XDG_CACHE_HOME:-$HOME/.cache}/hb-test-binaries"
else
  cache="$(cd "$(dirname "$0")/.." && pwd)/target/test-binaries"
fi
refresh=0
for arg in "$@"; do
  case "$arg" in
    --refresh) refresh=1 ;;
    -h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "fetch-test-binaries: unknown argument $arg" >&2; exit 2 ;;
  esac
done

say() { echo "fetch-test-binaries: $*" >&2; }
die() { say "$*"; exit 1; }

qemu="$cache/qemu-aarch64-static"
program="$cache/aarch64-busybox"

emit() {
  printf 'export HB_TEST_QEMU_AARCH64=%q\n' "$qemu"
  printf 'export HB_TEST_AARCH64_PROGRAM=%q\n' "$program"
}

if [ "$refresh" -eq 0 ] && [ -x "$qemu" ] && [ -x "$program" ] && [ -f "$cache/SHA256SUMS" ] \
  && (cd "$cache" && sha256sum --check --quiet SHA256SUMS >/dev/null 2>&1); then
  say "cached in $cache"
  emit
  exit 0
fi

for tool in curl gpgv xz sha256sum tar; do
  command -v "$tool" >/dev/null 2>&1 || die "needs $tool"
done

# --- Find the mirror: the first enabled "deb" source that serves $SUITE/$COMPONENT. -------
# Prints "URI<TAB>KEYRING" (KEYRING may be empty).
find_source() {
  local f
  # deb822 files: stanzas separated by blank lines.
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -r "$f" ] || continue
    awk -v suite="$SUITE" -v comp="$COMPONENT" '
      function flush() {
        if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") &&
            (" " comps " ") ~ (" " comp " ") && tolower(enabled) != "no" && uris != "") {
          split(uris, u, " "); printf "%s\t%s\n", u[1], signed; found = 1; exit
        }
        types = suites = comps = uris = signed = enabled = ""
      }
      /^[ \t]*#/ { next }
      /^[ \t]*$/ { flush(); next }
      {
        key = tolower($1); sub(/:$/, "", key)
        val = $0; sub(/^[^:]*:[ \t]*/, "", val)
        if (key == "types") types = val
        else if (key == "suites") suites = val
        else if (key == "components") comps = val
        else if (key == "uris") uris = val
        else if (key == "signed-by") signed = val
        else if (key == "enabled") enabled = val
      }
      END { if (!found) flush() }
    ' "$f"
  done
  # One-line format.
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -r "$f" ] || continue
    awk -v suite="$SUITE" -v comp="$COMPONENT" '
      /^[ \t]*deb[ \t]/ {
        signed = ""
        line = $0
        if (match(line, /\[[^]]*\]/)) {
          opts = substr(line, RSTART + 1, RLENGTH - 2)
          line = substr(line, 1, RSTART - 1) substr(line, RSTART + RLENGTH)
          n = split(opts, o, " ")
          for (i = 1; i <= n; i++) if (o[i] ~ /^signed-by=/) { signed = o[i]; sub(/^signed-by=/, "", signed) }
        }
        n = split(line, w, " ")
        if (w[3] != suite) next
        for (i = 4; i <= n; i++) if (w[i] == comp) { printf "%s\t%s\n", w[2], signed; exit }
      }
    ' "$f"
  done
}

source_line=$(find_source | head -n 1)
[ -n "$source_line" ] || die "no apt source for $SUITE/$COMPONENT in /etc/apt/sources.list{,.d}"
mirror=${source_line%%$'\t'*}
mirror=${mirror%/}
keyring=${source_line#*$'\t'}
# Signed-By may also hold an inline key block; only a file path is usable here.
if [ -z "$keyring" ] || [ ! -f "$keyring" ]; then
  keyring=/usr/share/keyrings/debian-archive-keyring.gpg
fi
[ -f "$keyring" ] || die "no archive keyring ($keyring)"
say "mirror from the apt configuration, suite $SUITE"

mkdir -p "$cache"
work=$(mktemp -d "$cache/.fetch.XXXXXX")
trap 'rm -rf "$work"' EXIT

fetch() { # URL DEST
  curl --fail --silent --show-error --location --retry 3 --connect-timeout 20 -o "$2" "$1" \
    || die "download failed: ${1#"$mirror"/}"
}

check_sha256() { # FILE SHA256 WHAT
  local got
  got=$(sha256sum "$1" | cut -d' ' -f1)
  [ "$got" = "$2" ] || die "$3: sha256 mismatch (expected $2, got $got)"
}

fetch "$mirror/dists/$SUITE/InRelease" "$work/InRelease"
gpgv --keyring "$keyring" --output "$work/Release" "$work/InRelease" 2>"$work/gpgv.log" \
  || { cat "$work/gpgv.log" >&2; die "InRelease of $SUITE: bad signature"; }

# Prints "FILENAME<TAB>SHA256" of PACKAGE for ARCH.
locate_deb() { # PACKAGE ARCH
  local pkg=$1 arch=$2 index="$COMPONENT/binary-$2/Packages.xz" sum
  sum=$(awk -v f="$index" '
    /^[A-Za-z]/ { in_sha = ($1 == "SHA256:"); next }
    in_sha && $3 == f { print $1; exit }
  ' "$work/Release")
  [ -n "$sum" ] || die "InRelease of $SUITE lists no $index"
  fetch "$mirror/dists/$SUITE/$index" "$work/Packages-$arch.xz"
  check_sha256 "$work/Packages-$arch.xz" "$sum" "$index"
  # awk reads to the end (no early exit): xz must not die of SIGPIPE under pipefail.
  xz -dc "$work/Packages-$arch.xz" | awk -v pkg="$pkg" '
    done { next }
    /^$/ { if (p == pkg && fn != "" && sha != "") { printf "%s\t%s\n", fn, sha; done = 1 } p = fn = sha = ""; next }
    /^Package: / { p = $2 }
    /^Filename: / { fn = $2 }
    /^SHA256: / { sha = $2 }
  '
}

# Extract MEMBER (path inside the .deb's data) of DEB to DEST, executable.
extract() { # DEB MEMBER DEST
  local dir="$work/x.$RANDOM"
  mkdir -p "$dir"
  if command -v dpkg-deb >/dev/null 2>&1; then
    dpkg-deb --fsys-tarfile "$1" | tar -x -C "$dir" "./$2"
  else
    local data
    data=$(cd "$dir" && ar t "$1" | grep '^data\.tar')
    (cd "$dir" && ar x "$1" "$data" && tar -xf "$data" "./$2")
  fi
  [ -f "$dir/$2" ] || die "$(basename "$1") has no $2"
  chmod 0755 "$dir/$2"
  mv -f "$dir/$2" "$3"
}

get() { # PACKAGE ARCH MEMBER DEST
  local entry filename sha deb
  entry=$(locate_deb "$1" "$2")
  [ -n "$entry" ] || die "$1 ($2) is not in $SUITE/$COMPONENT"
  filename=${entry%%$'\t'*}
  sha=${entry#*$'\t'}
  deb="$cache/$(basename "$filename")"
  if [ -f "$deb" ] && [ "$(sha256sum "$deb" | cut -d' ' -f1)" = "$sha" ]; then
    say "$(basename "$deb") already downloaded"
  else
    say "downloading $(basename "$filename")"
    fetch "$mirror/$filename" "$work/pkg.deb"
    check_sha256 "$work/pkg.deb" "$sha" "$(basename "$filename")"
    mv -f "$work/pkg.deb" "$deb"
  fi
  extract "$deb" "$3" "$4"
}

get qemu-user-static amd64 usr/bin/qemu-aarch64-static "$qemu"
get busybox-static arm64 bin/busybox "$program"
(cd "$cache" && sha256sum "$(basename "$qemu")" "$(basename "$program")" >SHA256SUMS)
say "ready in $cache"
emit
