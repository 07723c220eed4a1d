#!/bin/sh
# compose/seed.sh -- push a tiny synthesized OCI image (one gzip layer, a config, a manifest) into
# a Docker Distribution registry with curl, so outpost has something to pull. POSIX sh: it runs in
# the `seed` service of docker-compose.yml (curlimages/curl, busybox) and on any Linux host.
# Needs only curl, tar, gzip, sha256sum; nothing from the internet.
#
# Env (docker-compose.yml sets them):
#   SEED_REGISTRY    host:port of the registry, plain HTTP   (e.g. external:5000)
#   SEED_REPOSITORY  repository to push to                   (e.g. spectro-images/quay.io/example/app)
#   SEED_TAG         tag                                     (default v1)
#   SEED_USER, SEED_PASSWORD   Basic credentials for SEED_REGISTRY (htpasswd registries need them)
#   SEED_ORIGIN_REGISTRY, SEED_ORIGIN_REPOSITORY   optional: push the same image there too,
#                    anonymously (its origin; in compose, `upstream` standing for quay.io)
# Prints the manifest digest on its last line. Exits non-zero if any step fails.
set -eu

registry=${SEED_REGISTRY:?set SEED_REGISTRY to host:port of the registry}
repository=${SEED_REPOSITORY:?set SEED_REPOSITORY to the repository to push to}
tag=${SEED_TAG:-v1}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM

# Credentials go to curl in a config file, not on its command line (visible in `ps`).
: >"$work/anonymous.curlrc"
: >"$work/auth.curlrc"
chmod 600 "$work/auth.curlrc"
if [ -n "${SEED_USER:-}" ]; then
  printf 'user = "%s:%s"\n' "$SEED_USER" "${SEED_PASSWORD:-}" >"$work/auth.curlrc"
fi
curlrc=""
req() { curl --config "$curlrc" --silent --show-error --fail "$@"; }
sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { wc -c <"$1" | tr -d ' '; }

# The image: one file in a gzip-compressed tar layer, a config, an OCI manifest.
mkdir "$work/rootfs"
printf 'hello from the outpost seed\n' >"$work/rootfs/hello.txt"
tar -cf "$work/layer.tar" -C "$work/rootfs" hello.txt
gzip -n -c "$work/layer.tar" >"$work/layer.tar.gz"
diff_id=$(sha "$work/layer.tar")
layer=$(sha "$work/layer.tar.gz")
cat >"$work/config.json" <<JSON
{"architecture":"amd64","os":"linux","config":{"Cmd":["/bin/cat","/hello.txt"]},"rootfs":{"type":"layers","diff_ids":["sha256:$diff_id"]}}
JSON
config=$(sha "$work/config.json")
cat >"$work/manifest.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:$config","size":$(size "$work/config.json")},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:$layer","size":$(size "$work/layer.tar.gz")}]}
JSON
manifest=$(sha "$work/manifest.json")

wait_for() { # registry
  tries=0
  until req --output /dev/null "http://$1/v2/"; do
    tries=$((tries + 1))
    if [ "$tries" -ge 60 ]; then
      echo "seed: $1 did not answer /v2/ within 60 s (wrong address or credentials?)" >&2
      exit 1
    fi
    sleep 1
  done
}

# Monolithic upload: POST opens an upload, PUT sends the bytes with their digest.
push_blob() { # registry repository file digest-hex
  if req --head --output /dev/null "http://$1/v2/$2/blobs/sha256:$4" 2>/dev/null; then
    return
  fi
  location=$(req --request POST --dump-header - --output /dev/null "http://$1/v2/$2/blobs/uploads/" |
    tr -d '\r' | sed -n 's/^[Ll]ocation: *//p')
  [ -n "$location" ] || { echo "seed: $1 gave no upload Location" >&2; exit 1; }
  case "$location" in /*) location="http://$1$location" ;; esac
  case "$location" in
    *\?*) url="$location&digest=sha256:$4" ;;
    *) url="$location?digest=sha256:$4" ;;
  esac
  req --request PUT --header 'Content-Type: application/octet-stream' \
    --data-binary "@$3" --output /dev/null "$url"
}

push_image() { # registry repository
  echo "seed: waiting for $1"
  wait_for "$1"
  push_blob "$1" "$2" "$work/config.json" "$config"
  push_blob "$1" "$2" "$work/layer.tar.gz" "$layer"
  req --request PUT --header 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
    --data-binary "@$work/manifest.json" --output /dev/null "http://$1/v2/$2/manifests/$tag"
  echo "seed: pushed $1/$2:$tag"
}

if [ -n "${SEED_ORIGIN_REGISTRY:-}" ]; then
  curlrc="$work/anonymous.curlrc"
  push_image "$SEED_ORIGIN_REGISTRY" "${SEED_ORIGIN_REPOSITORY:?set SEED_ORIGIN_REPOSITORY too}"
fi
curlrc="$work/auth.curlrc"
push_image "$registry" "$repository"
echo "sha256:$manifest"
