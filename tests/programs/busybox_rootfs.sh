#!/bin/sh
# A busybox root filesystem at $1 with the applets named after it: what `podman import` and
# `ctr` get instead of an image from a registry.
set -e
root="$1"
shift
mkdir -p "$root/bin" "$root/proc" "$root/sys" "$root/dev" "$root/etc" "$root/tmp" "$root/www" "$root/run"
cp /bin/busybox "$root/bin/busybox"
for applet in "$@"; do ln -sf busybox "$root/bin/$applet"; done
echo 'root:x:0:0:root:/:/bin/sh' > "$root/etc/passwd"
echo 'root:x:0:' > "$root/etc/group"
