#!/bin/sh
# hbfence's drop-in for CloudStack's kvmsmpheartbeat.sh (same options: -i -p -m -h -t -r -c).
# Installed over CloudStack's script with dpkg-divert (Debian/Ubuntu) or a path unit (EL):
# see /usr/share/doc/hbfence/operations.md, "CloudStack integration".
exec "${HBFENCE_BIN:-/usr/sbin/hbfence}" cloudstack-heartbeat --config "${HBFENCE_CONFIG:-/etc/hbfence/hbfence.toml}" "$@"
