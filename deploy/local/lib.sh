# Shared by deploy/local/up and deploy/local/down: where things live and which ports they use.
# Everything of the local stack sits under one folder, $STACK (.stack/ of the checkout unless DAE_STACK_DIR says).

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STACK=${DAE_STACK_DIR:-$ROOT/.stack}

# Non-default ports, so a system Postgres (5432), NATS (4222) or MinIO (9000) can run beside us. DAE_*_PORT
# choose others; the choice is kept in $STACK/ports so that later runs find the services where they are.
# shellcheck source=/dev/null
[[ -s $STACK/ports ]] && source "$STACK/ports"
PG_PORT=${DAE_PG_PORT:-${PG_PORT:-15432}}
NATS_PORT=${DAE_NATS_PORT:-${NATS_PORT:-14222}}
NATS_HTTP_PORT=${DAE_NATS_HTTP_PORT:-${NATS_HTTP_PORT:-18222}}
S3_PORT=${DAE_S3_PORT:-${S3_PORT:-19000}}
S3_CONSOLE_PORT=${DAE_S3_CONSOLE_PORT:-${S3_CONSOLE_PORT:-19001}}

# Pinned server versions, built with `go install` and cached in $STACK/bin under versioned names.
NATS_MODULE=github.com/nats-io/nats-server/v2
NATS_VERSION=v2.15.2
MINIO_MODULE=github.com/minio/minio
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c

NATS_BIN=$STACK/bin/nats-server-$NATS_VERSION
MINIO_BIN=$STACK/bin/minio-$MINIO_VERSION

log() { printf '%s  %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# listening PORT: true when something accepts TCP connections on 127.0.0.1:PORT.
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# alive PIDFILE: true when the process named in PIDFILE runs.
alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

pg_bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

# as_pg CMD…: run a Postgres tool as the user that owns the data (Postgres refuses to run as root).
as_pg() {
	if [[ $(id -u) == 0 ]]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}
