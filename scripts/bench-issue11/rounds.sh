#!/usr/bin/env bash
# rounds.sh replay|run ROUNDS: interleaved hyperfine rounds (every command once per round, the
# order rotated each round) into hf/<kind>-round<N>.json; run from the work dir holding
# bin/binsync-{old,new}, full/ and minimal/ (load.sh's output). PORT: the FULL server (for
# `replay --schema-from` and `run`). OUT: the sink file (replay: /dev/shm/bench11-out.jsonl,
# tmpfs; run: ./x.jsonl, on disk like bench.sh's). `file:/dev/null` is refused (fdatasync EINVAL).
set -euo pipefail
kind=$1 rounds=$2
: "${PORT:?PORT of the FULL server}"
SRC=mysql://root@127.0.0.1:$PORT
mkdir -p hf
if [[ $kind == replay ]]; then
    OUT=${OUT:-/dev/shm/bench11-out.jsonl}
    prep="rm -f $OUT"
    cmds=()
    for v in full minimal; do
        cmds+=("bin/binsync-old replay --binlog-file $v/mariadb-bin.000001 --sink file:$OUT"
            "bin/binsync-old replay --schema-from $SRC --binlog-file $v/mariadb-bin.000001 --sink file:$OUT"
            "bin/binsync-new replay --binlog-file $v/mariadb-bin.000001 --sink file:$OUT")
    done
else
    OUT=${OUT:-$PWD/x.jsonl}
    prep="rm -rf $PWD/st $OUT"
    cmds=()
    for b in old new; do
        cmds+=("bin/binsync-$b run --source $SRC --server-id 4242 --state-dir $PWD/st --start earliest --exit-at-end --sink file:$OUT")
    done
fi
n=${#cmds[@]}
for ((r = 1; r <= rounds; r++)); do
    ordered=()
    for ((i = 0; i < n; i++)); do ordered+=("${cmds[(i + r) % n]}"); done
    hyperfine -N --runs 1 --prepare "$prep" --export-json "hf/$kind-round$r.json" "${ordered[@]}" >/dev/null
done
eval "$prep"
