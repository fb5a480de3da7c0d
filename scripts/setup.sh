# Sourced by the other scripts: installs what building and testing fleetmesh need on a
# fresh Debian machine, and checks each need by using it, not by a command's name: protoc
# must compile a file that imports a well-known type (the etcd client's build does), and
# the tests' etcd and etcdctl must run.
#
# FLEETMESH_NEED_ETCD=1 adds the tests' etcd to the build's needs; FLEETMESH_NEED_BUILDAH=1
# adds buildah, for the container image (its test and scripts/image);
# FLEETMESH_NEED_CHROMIUM=1 adds headless Chromium, for the status page's test.

# Each need: a check that runs it, the Debian package that provides it, and what the
# check looked for (named when it still fails after the install).
setup_needs=(
  "setup_has_protoc|protobuf-compiler|the protoc command"
  "setup_has_protobuf_includes|libprotobuf-dev|google/protobuf/descriptor.proto (protoc's include files)"
)
if [ "${FLEETMESH_NEED_ETCD:-0}" = 1 ]; then
  setup_needs+=(
    "setup_runs etcd --version|etcd-server|the etcd command"
    "setup_runs etcdctl version|etcd-client|the etcdctl command"
  )
fi
if [ "${FLEETMESH_NEED_BUILDAH:-0}" = 1 ]; then
  # Without its recommends: builds and runs use chroot isolation, which needs no runc.
  setup_needs+=("setup_runs buildah --version|buildah|the buildah command")
fi
if [ "${FLEETMESH_NEED_CHROMIUM:-0}" = 1 ]; then
  setup_needs+=("setup_runs chromium --version|chromium|the chromium command")
fi

# Runs a command quietly: it is there and it works.
setup_runs() {
  "$@" >/dev/null 2>&1
}

setup_has_protoc() {
  protoc --version >/dev/null 2>&1
}

# Compiles a one-line file that imports descriptor.proto, as the etcd client's build
# script does: the include files live in a package of their own.
setup_has_protobuf_includes() {
  local dir
  dir=$(mktemp -d) || return 1
  printf 'syntax = "proto3";\nimport "google/protobuf/descriptor.proto";\n' >"$dir/probe.proto"
  protoc --proto_path="$dir" --descriptor_set_out=/dev/null "$dir/probe.proto" >/dev/null 2>&1
  local ok=$?
  rm -rf "$dir"
  return $ok
}

setup_missing() {
  local need check package
  for need in "${setup_needs[@]}"; do
    IFS='|' read -r check package _ <<<"$need"
    $check || echo "$package"
  done
}

mapfile -t setup_packages < <(setup_missing | sort -u)
if [ "${#setup_packages[@]}" -gt 0 ]; then
  echo "setup: installing ${setup_packages[*]} from Debian's packages" >&2
  setup_sudo=""
  [ "$(id -u)" -eq 0 ] || setup_sudo="sudo"
  $setup_sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $setup_sudo apt-get install -y -qq --no-install-recommends \
    "${setup_packages[@]}" >/dev/null
  for need in "${setup_needs[@]}"; do
    IFS='|' read -r check package what <<<"$need"
    if ! $check; then
      echo "setup: $what is still missing after installing; Debian's package $package provides it" >&2
      # Sourced: the caller decides (scripts/image reports a missing buildah its own way).
      return 1
    fi
  done
  echo "setup: installed ${setup_packages[*]}" >&2
fi
unset setup_packages setup_sudo
