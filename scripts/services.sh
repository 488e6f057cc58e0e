#!/usr/bin/env bash
# Start the local services the tests use, if they are down (PostgreSQL, Redis,
# RabbitMQ, NATS JetStream, MariaDB). Idempotent; prints one line per service.
set -u
up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { for _ in $(seq 1 60); do up "$1" && return 0; sleep 0.5; done; return 1; }
start() {
  local name=$1 port=$2; shift 2
  if up "$port"; then echo "services: $name up on $port"; return 0; fi
  echo "services: starting $name"
  "$@" >/dev/null 2>&1 || true
  if wait_port "$port"; then echo "services: $name up on $port"; else echo "services: $name did NOT start on $port" >&2; fi
}
start postgresql 5432 bash -c 'pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start'
start redis 6379 redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
start rabbitmq 5672 rabbitmq-server -detached
start nats 4222 start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
start mariadb 3306 start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
up 3306 && mysql -h127.0.0.1 -uroot -e "CREATE DATABASE IF NOT EXISTS test" >/dev/null 2>&1 || true
exit 0
