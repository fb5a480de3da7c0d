# Sourced by the other scripts: installs what building and testing fleetmesh need on a
# fresh Debian machine (protoc for the gRPC code generation, etcd for the tests, buildah
# for the container image).

need_packages=()
command -v protoc >/dev/null 2>&1 || need_packages+=(protobuf-compiler)
if [ "${FLEETMESH_NEED_ETCD:-0}" = 1 ]; then
  command -v etcd >/dev/null 2>&1 || need_packages+=(etcd-server)
  command -v etcdctl >/dev/null 2>&1 || need_packages+=(etcd-client)
fi
if [ "${FLEETMESH_NEED_BUILDAH:-0}" = 1 ]; then
  # Without its recommends: builds and runs use chroot isolation, which needs no runc.
  command -v buildah >/dev/null 2>&1 || need_packages+=(buildah)
fi

if [ "${#need_packages[@]}" -gt 0 ]; then
  echo "installing ${need_packages[*]} from Debian's packages" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need_packages[@]}" >/dev/null
fi
