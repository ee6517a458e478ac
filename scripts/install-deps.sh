#!/usr/bin/env bash
# Installs every Debian package that qgrad's build, tests and demo need. Idempotent: it asks dpkg
# what is already there and runs `apt-get update` + `apt-get install` only when something is
# missing. Nothing is downloaded from anywhere but Debian's archive.
#
#   scripts/install-deps.sh            install what is missing
#   scripts/install-deps.sh --check    list what is missing, exit 1 if anything is
set -euo pipefail

packages=(
  # toolchain
  build-essential cmake ninja-build pkg-config git
  # formatting check (scripts/check-format.sh, CTest repo.format)
  clang-format
  # core: SIMD kernels with runtime dispatch; CLI parsing and JSON output for the tools
  libhwy-dev libcli11-dev nlohmann-json3-dev zlib1g-dev
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev
  # comm: Open MPI; parameter server: gRPC + Protobuf
  openmpi-bin libopenmpi-dev libprotobuf-dev protobuf-compiler libgrpc++-dev protobuf-compiler-grpc
  # train: linear models on Eigen, MLP/CNN on LibTorch (OpenBLAS, or torch runs on reference BLAS)
  libeigen3-dev libtorch-dev libopenblas0-pthread
  # data sets: Fashion-MNIST IDX files and LIBSVM's heart_scale example
  dataset-fashion-mnist liblinear-tools
  # emulated links (ip netns, tc tbf)
  iproute2
  # qgrad-report: plots (matplotlib; Pillow comes with it) and its page test in headless Chromium
  python3-matplotlib chromium chromium-driver
)

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done

if [[ "${1:-}" == "--check" ]]; then
  if ((${#missing[@]})); then echo "missing: ${missing[*]}"; exit 1; fi
  echo "all ${#packages[@]} packages installed"; exit 0
fi

if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#packages[@]} packages already installed"
  exit 0
fi

echo "install-deps: installing ${#missing[@]} missing packages: ${missing[*]}"
sudo=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install packages" >&2; exit 1; }
  sudo="sudo"
fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install-deps: done"
