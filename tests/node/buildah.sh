# Sourced (needs $cache): buildah_ runs buildah with its own storage under the cache.
# Buildah as root would otherwise create /etc/cni/net.d (its network config dir), /run/containers
# and /var/lib/containers/cache: a containers.conf of our own moves the first two into the cache,
# and the blob-info cache directory (a compiled-in path for root) is removed afterwards if it
# was not there before (callers: see `had_varlib` in build.sh and accessgate-image.sh).
buildah_() {
  mkdir -p "$cache/buildah"
  [ -f "$cache/buildah/containers.conf" ] || cat >"$cache/buildah/containers.conf" <<EOC
[network]
network_backend = "cni"
network_config_dir = "$cache/buildah/cni"
[engine]
tmp_dir = "$cache/buildah/tmp"
EOC
  CONTAINERS_CONF="$cache/buildah/containers.conf" CONTAINERS_REGISTRIES_CONF=/dev/null \
    buildah --storage-driver vfs --root "$cache/buildah/root" --runroot "$cache/buildah/run" "$@"
}
