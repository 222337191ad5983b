#!/usr/bin/env bash
# Builds the offline test image doco-test/busybox:1 (no registry needed): a root filesystem holding
# Debian's static busybox with one link per applet, imported with `docker import`. Prints the tag.
# Does nothing when the image already exists. `--tag` only prints the tag.
set -euo pipefail

TAG="${DOCO_TEST_IMAGE:-doco-test/busybox:1}"
if [ "${1:-}" = "--tag" ]; then
  echo "$TAG"
  exit 0
fi
if docker image inspect "$TAG" >/dev/null 2>&1; then
  echo "$TAG"
  exit 0
fi
busybox=/bin/busybox
[ -x "$busybox" ] || { echo "test-image: $busybox is missing; run scripts/install-deps.sh" >&2; exit 1; }

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/srv"
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
chmod 1777 "$root/tmp"
tar -C "$root" -c . | docker import -c 'CMD ["/bin/sh"]' -c 'ENV PATH=/bin' - "$TAG" >/dev/null
echo "$TAG"
