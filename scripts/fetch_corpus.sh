#!/usr/bin/env bash
# Fetch real-world training text for mambabyte from Debian packages, without root.
#
# Usage: scripts/fetch_corpus.sh [prose|code|all] [DEST]
#   prose  King James Bible (bible-kjv-text, decoded with the bible-kjv program)
#          + Jane Austen's six novels (r-cran-janeaustenr, decoded from R's
#          lazy-load database by scripts/rdata_extract.py)            ~8.3 MB
#   code   *.c / *.h files of a few Linux 6.1 source directories
#          (linux-source-6.1, a ~140 MB download)                      ~46 MB
#   all    both.
# DEST defaults to <repo>/data/corpus (git-ignored). The corpus lands in
# DEST/<name>/ (only documents, one per file) with provenance in
# DEST/<name>.manifest. A corpus whose manifest already exists is skipped.
#
# Only `apt-get download` touches the network; it needs apt package lists
# (run `apt-get update` as root once). Downloaded .debs are cached in
# $MB_CORPUS_CACHE (default <repo>/data/cache/debs) and reused.
# See docs/corpus.md.
set -euo pipefail
shopt -s inherit_errexit # so `die` inside $(...) stops the script

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
MODE=${1:-prose}
DEST=${2:-$REPO/data/corpus}
CACHE=${MB_CORPUS_CACHE:-$REPO/data/cache/debs}

# Package and Linux source subdirectories (relative to the tarball root) for `code`.
CODE_PKG=linux-source-6.1
CODE_DIRS=(kernel mm lib fs/ext4 net/ipv4 include/linux)

die() {
    echo "fetch_corpus: error: $*" >&2
    exit 1
}
log() { echo "fetch_corpus: $*" >&2; }

case "$MODE" in
prose | code | all) ;;
-h | --help)
    sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
*) die "unknown corpus '$MODE' (expected prose, code or all)" ;;
esac

for tool in apt-get apt-cache dpkg-deb python3 tar xz sha256sum; do
    command -v "$tool" >/dev/null 2>&1 || die "required tool '$tool' not found on PATH"
done

mkdir -p "$DEST" "$CACHE" || die "cannot create $DEST or $CACHE"
DEST=$(cd "$DEST" && pwd)
CACHE=$(cd "$CACHE" && pwd)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/mb-corpus.XXXXXX") || die "cannot create a temp dir"
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT

# candidate_version PKG -> prints the version apt would download, or fails.
candidate_version() {
    local pkg=$1 ver
    ver=$(LC_ALL=C apt-cache policy "$pkg" 2>/dev/null | awk '/^  Candidate:/ {print $2; exit}')
    if [[ -z "$ver" || "$ver" == "(none)" ]]; then
        die "package '$pkg' is not in the apt package lists. Run \`apt-get update\` as root" \
            "(needs Debian bookworm 'main' in /etc/apt/sources.list*), then re-run this script."
    fi
    echo "$ver"
}

# fetch_deb PKG -> downloads PKG's candidate .deb into $CACHE (unless cached)
# and prints its path.
fetch_deb() {
    local pkg=$1 ver fver deb
    ver=$(candidate_version "$pkg")
    fver=${ver//:/%3a} # apt escapes the epoch colon in file names
    deb=$(compgen -G "$CACHE/${pkg}_${fver}_*.deb" | head -n 1 || true)
    if [[ -z "$deb" ]]; then
        log "downloading $pkg $ver"
        if ! (cd "$CACHE" && apt-get download -q "$pkg=$ver" >"$WORK/apt-$pkg.log" 2>&1); then
            cat "$WORK/apt-$pkg.log" >&2
            die "apt-get download $pkg=$ver failed (see the apt output above)"
        fi
        deb=$(compgen -G "$CACHE/${pkg}_${fver}_*.deb" | head -n 1 || true)
        [[ -n "$deb" ]] || die "apt-get download $pkg reported success but no ${pkg}_${fver}_*.deb is in $CACHE"
    else
        log "using cached $(basename "$deb")"
    fi
    dpkg-deb -f "$deb" Package >/dev/null 2>&1 || die "$deb is not a valid .deb (delete it and re-run)"
    echo "$deb"
}

# manifest_entry DEB [COPYRIGHT_FILE] -> a provenance paragraph for the
# manifest, with the package's Debian copyright file indented below it.
manifest_entry() {
    local deb=$1 copyright=${2:-} pkg src
    pkg=$(dpkg-deb -f "$deb" Package)
    src=$(dpkg-deb -f "$deb" Source || true)
    printf 'package: %s\nversion: %s\nsource package: %s\ndeb: %s\nsha256: %s\n' \
        "$pkg" "$(dpkg-deb -f "$deb" Version)" "${src:-$pkg}" "$(basename "$deb")" \
        "$(sha256sum "$deb" | cut -d' ' -f1)"
    if [[ -n "$copyright" && -f "$copyright" ]]; then
        echo "copyright (/usr/share/doc/$pkg/copyright):"
        sed 's/^/    /' "$copyright"
    fi
    echo
}

# summarize NAME -> "NAME: N files, B bytes" plus per-file sizes for prose.
summarize() {
    local name=$1 dir="$DEST/$1" files bytes
    files=$(find "$dir" -type f | wc -l)
    bytes=$(find "$dir" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
    echo "$name: $dir: $files files, $bytes bytes"
    if [[ "$name" == prose ]]; then
        find "$dir" -type f -printf '  %f\t%s bytes\n' | sort
    fi
}

already_built() {
    [[ -d "$DEST/$1" && -f "$DEST/$1.manifest" ]]
}

# publish NAME STAGING_DIR MANIFEST -> moves a finished corpus into place.
publish() {
    local name=$1 staging=$2 manifest=$3
    rm -rf "${DEST:?}/$name"
    mv "$staging" "$DEST/$name"
    mv "$manifest" "$DEST/$name.manifest"
}

build_prose() {
    local x="$WORK/prose-x" out="$WORK/prose-out" man="$WORK/prose.manifest"
    local deb_text deb_prog deb_austen bible verses
    deb_text=$(fetch_deb bible-kjv-text)
    deb_prog=$(fetch_deb bible-kjv)
    deb_austen=$(fetch_deb r-cran-janeaustenr)
    mkdir -p "$x" "$out"
    for deb in "$deb_text" "$deb_prog" "$deb_austen"; do
        dpkg-deb -x "$deb" "$x" || die "dpkg-deb -x $deb failed"
    done

    # --- King James Bible: run the packaged `bible` program on its data file.
    bible="$x/usr/bin/bible"
    [[ -x "$bible" && -f "$x/usr/lib/bible.data" ]] || die "bible-kjv packages lack usr/bin/bible or usr/lib/bible.data"
    local ldpath=""
    if ldd "$bible" 2>/dev/null | grep -q 'not found'; then
        # Shared libraries (readline) are not installed: take them from Debian too.
        log "bible needs libraries that are not installed; fetching libreadline8 libtinfo6"
        for lib in libreadline8 libtinfo6; do
            dpkg-deb -x "$(fetch_deb "$lib")" "$WORK/libs" || die "dpkg-deb -x $lib failed"
        done
        ldpath=$(find "$WORK/libs" -name 'lib*.so*' -printf '%h\n' | sort -u | paste -sd:)
    fi
    # -p: search only the extracted dir for bible.data; -l: no line wrapping
    # (pretty-printing with chapter headings, one verse per line).
    if ! LD_LIBRARY_PATH="$ldpath${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
        "$bible" -p "$x/usr/lib" -l 1000000 Gen1:1-Rev22:21 </dev/null >"$WORK/kjv.raw" 2>"$WORK/kjv.err"; then
        cat "$WORK/kjv.err" >&2
        die "running the bible program failed"
    fi
    sed '1{/^$/d}' "$WORK/kjv.raw" >"$out/kjv.txt" # drop the leading blank line
    verses=$(grep -c '^  [0-9][0-9]* ' "$out/kjv.txt" || true)
    [[ "$verses" == 31102 ]] || die "KJV dump has $verses verses, expected 31102 (Genesis 1:1 .. Revelation 22:21)"
    grep -q '^  21 The grace of our Lord Jesus Christ be with you all\. Amen\.$' "$out/kjv.txt" ||
        die "KJV dump does not end with Revelation 22:21"

    # --- Jane Austen: decode the R lazy-load database.
    local stem="$x/usr/lib/R/site-library/janeaustenr/data/Rdata" n
    python3 "$SCRIPT_DIR/rdata_extract.py" write "$stem" "$out" austen_ \
        sensesensibility prideprejudice mansfieldpark emma northangerabbey persuasion \
        >"$WORK/austen.log" || die "decoding Jane Austen's novels from $stem failed"
    n=$(find "$out" -name 'austen_*.txt' | wc -l)
    [[ "$n" == 6 ]] || die "expected 6 Austen novels, got $n"
    # janeaustenr's austen_books() has 73422 lines in total.
    n=$(cat "$out"/austen_*.txt | wc -l)
    [[ "$n" == 73422 ]] || die "Austen novels have $n lines, expected 73422"

    {
        echo "# mambabyte prose corpus, built $(date -u +%Y-%m-%dT%H:%M:%SZ) by scripts/fetch_corpus.sh"
        echo "# kjv.txt: 'bible -l 1000000 Gen1:1-Rev22:21' (bible-kjv) on bible-kjv-text's bible.data"
        echo "# austen_*.txt: janeaustenr data sets, one vector element per line"
        echo
        manifest_entry "$deb_text" "$x/usr/share/doc/bible-kjv-text/copyright"
        manifest_entry "$deb_prog"
        manifest_entry "$deb_austen" "$x/usr/share/doc/r-cran-janeaustenr/copyright"
        echo "## files"
        (cd "$out" && sha256sum -- *.txt)
    } >"$man"
    publish prose "$out" "$man"
}

build_code() {
    local out="$WORK/code-out" man="$WORK/code.manifest" deb top member
    deb=$(fetch_deb "$CODE_PKG")
    member=$(dpkg-deb -c "$deb" | awk '{print $6}' | grep -m1 '^\./usr/src/linux-source-.*\.tar\.xz$' || true)
    [[ -n "$member" ]] || die "$deb contains no usr/src/linux-source-*.tar.xz"
    top=$(basename "$member" .tar.xz)
    mkdir -p "$out"
    local patterns=()
    for d in "${CODE_DIRS[@]}"; do
        patterns+=("$top/$d/*.[ch]")
    done
    patterns+=("$top/COPYING")
    log "extracting ${CODE_DIRS[*]} (*.c, *.h) from $member"
    # Stream the inner tarball instead of unpacking ~140 MB to disk first.
    # (GNU tar wildcards match across '/', so each pattern is recursive.)
    if ! dpkg-deb --fsys-tarfile "$deb" | tar -xO "$member" |
        tar -xJ -C "$out" --wildcards --no-same-owner --no-same-permissions "${patterns[@]}"; then
        die "extracting C sources from $deb failed"
    fi
    [[ -d "$out/$top" ]] || die "no files extracted from $member"
    local staging="$WORK/code-tree"
    mv "$out/$top/COPYING" "$WORK/linux-COPYING" || die "$member has no COPYING file"
    mv "$out/$top" "$staging"
    rmdir "$out"
    dpkg-deb --fsys-tarfile "$deb" |
        tar -xO "./usr/share/doc/$CODE_PKG/copyright" >"$WORK/linux-copyright" 2>/dev/null || true
    find "$staging" -type f -size 0 -delete
    local nfiles
    nfiles=$(find "$staging" -type f | wc -l)
    [[ "$nfiles" -gt 1000 ]] || die "only $nfiles C files extracted; expected thousands"
    {
        echo "# mambabyte code corpus, built $(date -u +%Y-%m-%dT%H:%M:%SZ) by scripts/fetch_corpus.sh"
        echo "# *.c and *.h under: ${CODE_DIRS[*]} of $member (empty files dropped)"
        echo "# licence: GPL-2.0 (some files dual-licensed; see each file's SPDX line)"
        echo
        manifest_entry "$deb" "$WORK/linux-copyright"
        echo "kernel COPYING:"
        sed 's/^/    /' "$WORK/linux-COPYING"
    } >"$man"
    publish code "$staging" "$man"
}

start=$(date +%s)
targets=()
case "$MODE" in
prose) targets=(prose) ;;
code) targets=(code) ;;
all) targets=(prose code) ;;
esac

for t in "${targets[@]}"; do
    if already_built "$t"; then
        log "$t: already built in $DEST/$t (delete it and $DEST/$t.manifest to rebuild)"
    else
        log "building $t corpus"
        "build_$t"
    fi
done

for t in "${targets[@]}"; do
    summarize "$t"
done
echo "done in $(($(date +%s) - start)) s"
