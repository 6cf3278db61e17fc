#!/usr/bin/env bash
# tools/perf/cache_open.sh — the cold-open cost of a large user cache, CPU only: the first cache
# hit of a fresh process (`jitattn demo`'s first "loaded from cache" line) against user DBs padded
# with 1 MiB filler rows to each size, with the file's pages dropped from the page cache first
# (dd iflag=nocache). For comparison it times PRAGMA quick_check on the same cold file: what
# every open paid before full checks moved to `jitattn verify`.
#   tools/perf/cache_open.sh [MiB ...]      default: 100 1000 (needs that much free space in $TMPDIR)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
cli=${JITATTN_CLI:-build/tools/jitattn}  # another build to compare: JITATTN_CLI=path/to/jitattn
command -v sqlite3 >/dev/null || { echo "cache_open.sh needs the sqlite3 command (apt-get install sqlite3)"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
drop_cache() { dd if="$1" iflag=nocache count=0 status=none; }
first_hit_ms() { JITATTN_CACHE=$1 "$cli" demo | grep -m1 "loaded from cache" | sed -E 's/.* in +([0-9.]+) ms.*/\1/'; }

JITATTN_CACHE=$tmp/seed.sqlite "$cli" demo >/dev/null  # compiles the demo's kernels once
drop_cache "$tmp/seed.sqlite"
echo "seed DB ($(du -m "$tmp/seed.sqlite" | cut -f1) MiB): first hit $(first_hit_ms "$tmp/seed.sqlite") ms"
sizes=("$@")
[ ${#sizes[@]} -eq 0 ] && sizes=(100 1000)
for mb in "${sizes[@]}"; do
  db=$tmp/kernels-$mb.sqlite
  cp "$tmp/seed.sqlite" "$db"
  sqlite3 "$db" "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $mb)
                 INSERT INTO kernels(key, name, target, compiler, binary, binary_hash, size, created_at, last_used_at)
                 SELECT printf('filler%026d', i), 'filler.' || i, 'sm_80', 'filler', randomblob(1048576), '', 1048576, 0, 0 FROM n;"
  drop_cache "$db"
  hit=$(first_hit_ms "$db")
  drop_cache "$db"
  t0=$(date +%s.%N)
  sqlite3 "$db" "PRAGMA quick_check" >/dev/null
  qc=$(echo "$(date +%s.%N) - $t0" | bc)
  echo "user DB $(du -m "$db" | cut -f1) MiB: first hit ${hit} ms; PRAGMA quick_check (cold) ${qc} s"
  rm -f "$db" "$db"-wal "$db"-shm
done
