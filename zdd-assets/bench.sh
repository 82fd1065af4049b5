#!/usr/bin/env bash
# Benchmark of `zdd-assets publish` (prints figures; not a test).
#
#   zdd-assets/bench.sh            on a fresh loop-mounted ext4 (needs root)
#   BENCH_FS=here zdd-assets/bench.sh [WORKDIR]
#                                  in WORKDIR (default: a folder in /var/tmp)
#
# Generates a build of 10,000 files / 200 MB (10 HTML pages, 80 stylesheets
# that reference 4,000 images, 3,000 bundler-hashed chunks, 2,910 files
# nothing references), then measures, each as the median of RUNS runs with
# a warm page cache:
#
#   sha256sum   `sha256sum` over the same files (one process: the baseline)
#   cold        publish into an empty asset root (hash on every core, pool,
#               release folder, syncfs, switch)
#   unchanged   publish the same build again (stat cache; nothing written)
#   rehash      the same with --rehash (every file read and hashed again)
#   1% changed  a second build with 100 of the files changed (34 images,
#               33 chunks, 33 unreferenced files), published beside the
#               first: its time, and the root's disk use (`du`, which
#               counts a hard-linked file once) against one release's
#
# Aims (issues 4, 14): cold <= 1.2x sha256sum; unchanged <= 0.3x cold;
# two releases <= 1.05x the disk of one.
#
# ZDD_ASSETS_BIN=PATH measures that binary instead of building this tree.
#
# Why a loop-mounted ext4 by default: a publish creates one file per build
# file, and some virtual machines' root file systems make file creation
# very slow (on the CI machine: about 0.6 ms per new file, serialised,
# against 35 us on a fresh ext4), which then dominates every figure. Run
# with BENCH_FS=here to measure the file system you will publish to.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
BENCH_FS=${BENCH_FS:-ext4}
say() { printf 'bench: %s\n' "$*" >&2; }

if [ "$BENCH_FS" = ext4 ]; then
    [ "$(id -u)" = 0 ] || { say "a loop mount needs root; use BENCH_FS=here"; exit 2; }
    command -v mkfs.ext4 >/dev/null || { say "needs mkfs.ext4 (e2fsprogs)"; exit 2; }
    image=$(mktemp /var/tmp/zdd-assets-bench-XXXXXX.img)
    work=$(mktemp -d /var/tmp/zdd-assets-bench-mnt.XXXXXX)
    cleanup() { umount "$work" 2>/dev/null || true; rm -rf "$work" "$image"; }
    trap cleanup EXIT
    truncate -s 2G "$image"
    mkfs.ext4 -q -F "$image"
    mount -o loop "$image" "$work"
    fs="a fresh ext4 (loop device)"
else
    work=${1:-$(mktemp -d /var/tmp/zdd-assets-bench.XXXXXX)}
    mkdir -p "$work"
    [ -n "${1:-}" ] || trap 'rm -rf "$work"' EXIT
    fs="$(df --output=fstype "$work" | tail -1) at $work"
fi
site=$work/site root=$work/root

if [ -n "${ZDD_ASSETS_BIN:-}" ]; then
    bin=$ZDD_ASSETS_BIN
else
    say "building zdd-assets (release)"
    cargo build --release --quiet -p zdd-assets
    bin=$PWD/target/release/zdd-assets
fi

if [ ! -f "$site/index.html" ]; then
    say "generating $site"
    rm -rf "$site"
    mkdir -p "$site/img" "$site/assets" "$site/media" "$site/css"
    head -c 120000000 /dev/urandom | split -b 30000 -a 4 -d --additional-suffix=.png - "$site/img/photo-"
    head -c 48000000 /dev/urandom | split -b 16000 -a 4 -d --additional-suffix=.Bq3xK9fZ.js - "$site/assets/chunk-"
    head -c 31573500 /dev/urandom | split -b 10850 -a 4 -d --additional-suffix=.bin - "$site/media/data-"
    for s in $(seq -w 0 39); do
        {
            printf '@import "base-%s.css";\n' "$s"
            for i in $(seq 0 99); do
                printf '.p%s-%d{background:url(../img/photo-%04d.png)}\n' "$s" "$i" $((10#$s * 100 + i))
            done
        } >"$site/css/s$s.css"
        printf 'body{margin:%dpx}\n' "$((10#$s))" >"$site/css/base-$s.css"
    done
    for p in $(seq 0 9); do
        {
            printf '<!doctype html><html><head>\n'
            for s in $(seq -w 0 39); do printf '<link rel="stylesheet" href="/css/s%s.css">\n' "$s"; done
            for c in $(seq 0 9); do printf '<script type="module" src="/assets/chunk-%04d.Bq3xK9fZ.js"></script>\n' "$((p * 10 + c))"; done
            printf '</head><body><img src="img/photo-%04d.png" srcset="img/photo-%04d.png 2x"></body></html>\n' "$p" "$((p + 1))"
        } >"$site/page$p.html"
    done
    mv "$site/page0.html" "$site/index.html"
fi
files=$(find "$site" -type f | wc -l)
mb=$(du -sm --apparent-size "$site" | cut -f1)
say "$files files, $mb MB"

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
elapsed() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null; t1=$(date +%s.%N); awk "BEGIN {print $t1 - $t0}"; }
ratio() { awk "BEGIN {printf \"%.2f\", $1 / $2}"; }

# Warm the page cache so every run reads from memory.
find "$site" -type f -print0 | xargs -0 cat >/dev/null
sync

sha=$(for _ in $(seq "$RUNS"); do elapsed sh -c "find '$site' -type f -print0 | xargs -0 sha256sum"; done | median)

cold_runs=()
for _ in $(seq "$RUNS"); do
    rm -rf "$root"
    sync
    cold_runs+=("$(elapsed "$bin" publish "$site" --root "$root" -q)")
done
cold=$(printf '%s\n' "${cold_runs[@]}" | median)
sleep 2 # past the stat cache's racy window, as any real re-publish is
"$bin" publish "$site" --root "$root" -q >/dev/null
unchanged=$(for _ in $(seq "$RUNS"); do elapsed "$bin" publish "$site" --root "$root" -q; done | median)
rehash=$(for _ in $(seq "$RUNS"); do elapsed "$bin" publish "$site" --root "$root" -q --rehash; done | median)

# A second build that differs in 1% of its files: hard links to the first
# except for the changed files, which are written anew.
site2=$work/site2
rm -rf "$site2"
cp -al "$site" "$site2"
change() { # FOLDER PATTERN COUNT
    local n=0 f size
    for f in "$site2/$1"/$2; do
        [ "$n" -lt "$3" ] || break
        size=$(stat -c %s "$f")
        rm "$f"
        head -c "$size" /dev/urandom >"$f"
        n=$((n + 1))
    done
}
change img 'photo-*.png' 34
change assets 'chunk-*.js' 33
change media 'data-*.bin' 33
find "$site2" -type f -print0 | xargs -0 cat >/dev/null
sync
one_kb=$(du -sk "$root" | cut -f1)
changed=$(elapsed "$bin" publish "$site2" --root "$root" -q)
two_kb=$(du -sk "$root" | cut -f1)

printf '\nzdd-assets publish: %s files / %s MiB on %s, %s cores, median of %s runs\n' \
    "$files" "$mb" "$fs" "$(nproc)" "$RUNS"
printf '  sha256sum (baseline)  %6.3f s\n' "$sha"
printf '  cold publish          %6.3f s   %sx sha256sum   (aim <= 1.2x)\n' "$cold" "$(ratio "$cold" "$sha")"
printf '  unchanged re-publish  %6.3f s   %sx cold        (aim <= 0.3x)\n' "$unchanged" "$(ratio "$unchanged" "$cold")"
printf '  re-publish --rehash   %6.3f s   %sx cold\n' "$rehash" "$(ratio "$rehash" "$cold")"
printf '  1%% changed publish    %6.3f s   %sx cold        (one run)\n' "$changed" "$(ratio "$changed" "$cold")"
printf '  disk, one release     %6d KiB\n' "$one_kb"
printf '  disk, two releases    %6d KiB  %sx one         (aim <= 1.05x)\n' "$two_kb" "$(ratio "$two_kb" "$one_kb")"
