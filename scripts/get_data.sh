#!/usr/bin/env bash
# Fetch the public full releases of the data the repository carries only in part (needs internet; tests never run it).
#
#   scripts/get_data.sh [--dest DIR] [svamp] [csqa] [thermoprot]     (no name: all three; DIR default: data/full)
#
#   svamp       the SVAMP release's data/ folder (github.com/arkilpatel/SVAMP, MIT): the MAWPS, ASDiv-A and SVAMP
#               settings carried in data/arithmetic, plus the *_without_questions and cv_svamp_augmented variants
#               -> DIR/arithmetic                       (run_glue_like.py --task mawps --data_dir DIR/arithmetic)
#   csqa        CommonsenseQA 1.11 random split from the official bucket (CC BY-SA 4.0), checked by SHA-256; the
#               same two files data/commonsense/csqa carries, plus the unlabelled test split
#               -> DIR/commonsense/csqa                 (--task csqa --data_dir DIR/commonsense/csqa)
#   thermoprot  ThermoProt's training sequences (github.com/jafetgado/ThermoProt, GPLv3), 8,000 per class, of
#               which data/protein/thermoprot carries a 1,000-per-class sample
#               -> DIR/protein/thermoprot               (--task thermoprot --data_dir DIR/protein/thermoprot)
#
# Other tasks read the Hub ids their modules name (tau/commonsense_qa, allenai/winogrande, ehovy/race,
# Helsinki-NLP/opus-100) when no --data_dir is given. HotProtein and Meltome come from their authors' releases.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="$ROOT/data/full"
WANTED=()
while [ $# -gt 0 ]; do
    case "$1" in
        --dest) DEST="$2"; shift 2 ;;
        --dest=*) DEST="${1#--dest=}"; shift ;;
        svamp|csqa|thermoprot) WANTED+=("$1"); shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "get_data.sh: unknown argument '$1' (expected --dest DIR, svamp, csqa or thermoprot)" >&2; exit 2 ;;
    esac
done
[ ${#WANTED[@]} -gt 0 ] || WANTED=(svamp csqa thermoprot)

SVAMP_REPO=https://github.com/arkilpatel/SVAMP.git
THERMOPROT_REPO=https://github.com/jafetgado/ThermoProt.git
CSQA_URL=https://s3.amazonaws.com/commensenseqa
CSQA_SHA256_TRAIN=58ffa3c8472410e24b8c43f423d89c8a003d8284698a6ed7874355dedd09a2fb
CSQA_SHA256_DEV=3210497fdaae614ac085d9eb873dd7f4d49b6f965a93adadc803e1229fd8a02a

need() { command -v "$1" >/dev/null || { echo "get_data.sh: '$1' is needed; install it first" >&2; exit 1; }; }
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# A shallow clone into a temporary folder; only the named sub-folder is kept.
fetch_repo_folder() {  # url folder target
    need git
    git clone --quiet --depth 1 "$1" "$TMP/repo"
    mkdir -p "$(dirname "$3")"
    rm -rf "$3.part" && cp -r "$TMP/repo/$2" "$3.part"
    rm -rf "$3" && mv "$3.part" "$3"
    rm -rf "$TMP/repo"
}

download() {  # url file [sha256]
    need curl
    curl --fail --location --silent --show-error --output "$2.part" "$1"
    if [ -n "${3:-}" ]; then
        got="$(sha256sum "$2.part" | cut -d' ' -f1)"
        [ "$got" = "$3" ] || { echo "get_data.sh: $1: SHA-256 $got, expected $3 (not kept)" >&2; rm -f "$2.part"; exit 1; }
    fi
    mv "$2.part" "$2"
}

for name in "${WANTED[@]}"; do
    case "$name" in
        svamp)
            fetch_repo_folder "$SVAMP_REPO" data "$DEST/arithmetic"
            for f in "$ROOT"/data/arithmetic/*/*.csv "$ROOT"/data/arithmetic/*/*/*.csv; do
                [ -f "$f" ] || continue
                rel="${f#"$ROOT"/data/arithmetic/}"
                cmp -s "$f" "$DEST/arithmetic/$rel" || echo "note: $rel differs from the copy in data/arithmetic"
            done
            echo "svamp: $DEST/arithmetic" ;;
        csqa)
            mkdir -p "$DEST/commonsense/csqa"
            download "$CSQA_URL/train_rand_split.jsonl" "$DEST/commonsense/csqa/train_rand_split.jsonl" "$CSQA_SHA256_TRAIN"
            download "$CSQA_URL/dev_rand_split.jsonl" "$DEST/commonsense/csqa/dev_rand_split.jsonl" "$CSQA_SHA256_DEV"
            download "$CSQA_URL/test_rand_split_no_answers.jsonl" "$DEST/commonsense/csqa/test_rand_split_no_answers.jsonl"
            echo "csqa: $DEST/commonsense/csqa" ;;
        thermoprot)
            fetch_repo_folder "$THERMOPROT_REPO" training_sequences "$DEST/protein/thermoprot"
            echo "thermoprot: $DEST/protein/thermoprot ($(grep -c '>' "$DEST"/protein/thermoprot/*.fasta | tr '\n' ' '))" ;;
    esac
done
