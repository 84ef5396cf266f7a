# Helpers shared by hack/cluster.sh and hack/emulators.sh. Sourced, not run.
# Everything diagnostic goes to stderr: stdout is reserved for the `export` lines.

log() { echo "[$(basename "$0")] $*" >&2; }
die() { log "error: $*"; exit 1; }

# A free TCP port on 127.0.0.1, as the kernel hands them out.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# wait_for NAME SECONDS LOGFILE CMD...: run CMD until it succeeds; on timeout show the log.
wait_for() {
  local name=$1 secs=$2 logfile=$3; shift 3
  wait_alive "$name" "$secs" "$logfile" "" "$@"
}

# wait_alive NAME SECONDS LOGFILE PID CMD...: like wait_for, but gives up at once when PID
# (the server being waited for; empty: none) has exited, e.g. its port was taken meanwhile.
wait_alive() {
  local name=$1 secs=$2 logfile=$3 pid=$4; shift 4
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
      log "$name exited while starting; last lines of $logfile:"
      tail -n 5 "$logfile" >&2 || true
      return 1
    fi
    if [ $SECONDS -ge $deadline ]; then
      log "$name did not become ready in ${secs}s; last lines of $logfile:"
      tail -n 30 "$logfile" >&2 || true
      return 1
    fi
    sleep 0.2
  done
}

# Stop every process recorded in DIR/pids, politely then firmly. A process started with
# setsid leads its own process group (gcloud's emulator forks java): signal the whole group.
signal_pid() {
  kill "-$1" -- "-$2" 2>/dev/null || kill "-$1" "$2" 2>/dev/null || true
}
stop_pids() {
  local dir=$1 pid
  [ -f "$dir/pids" ] || return 0
  for pid in $(tac "$dir/pids"); do signal_pid TERM "$pid"; done
  for _ in $(seq 1 50); do
    local alive=0
    for pid in $(cat "$dir/pids"); do
      { kill -0 -- "-$pid" 2>/dev/null || kill -0 "$pid" 2>/dev/null; } && alive=1
    done
    [ $alive -eq 0 ] && break
    sleep 0.1
  done
  for pid in $(cat "$dir/pids"); do signal_pid KILL "$pid"; done
  rm -f "$dir/pids"
}

# reap_with_owner PID SCRIPT DIR: run `SCRIPT down DIR` once PID has exited, from a detached
# watcher, so that a test binary that crashes still leaves nothing running.
reap_with_owner() {
  local owner=$1 script=$2 dir=$3
  setsid bash -c '
    while kill -0 "$0" 2>/dev/null && [ -d "$2" ]; do sleep 1; done
    [ -d "$2" ] && "$1" down "$2" >/dev/null 2>&1
  ' "$owner" "$script" "$dir" </dev/null >/dev/null 2>&1 &
}
