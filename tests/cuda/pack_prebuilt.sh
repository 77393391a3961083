#!/bin/sh
# Pack the GPU programs of a CUDA Release build, with the shared libraries the device image lacks
# (cJSON, OpenBLAS and its Fortran runtime), into one gzip archive for a `run` call's carry (the
# archive is ~1/3 of the raw size, under the 64 MiB carry limit):
#   sh tests/cuda/pack_prebuilt.sh BUILD_DIR ARCHIVE      (e.g. build-rel .dev-pack.tgz)
# then on the device: sh tests/cuda/device_run_all.sh ARCHIVE $OUT
set -e
BUILD=${1:?BUILD_DIR}
ARCH=${2:?ARCHIVE}
T=$(mktemp -d)
mkdir -p "$T/pack/bin" "$T/pack/lib"
for p in mambabyte test_kernels_cuda test_model_cuda test_scan_cuda test_step_cuda \
    bench_scan_cuda bench_kernels_cuda bench_generate_cuda; do
    cp "$BUILD/$p" "$T/pack/bin/" && strip -s "$T/pack/bin/$p"
done
for l in libcjson.so.1 libgfortran.so.5 libquadmath.so.0; do
    f=$(ldconfig -p | awk -v l="$l" '$1 == l { print $NF; exit }')
    [ -n "$f" ] && cp -L "$f" "$T/pack/lib/"
done
# the OpenMP build of OpenBLAS: the pthreads one (Debian's default alternative) runs its own
# threads inside our OpenMP regions and made the CPU references ~20x slower on the device
cp -L /usr/lib/x86_64-linux-gnu/openblas-openmp/libopenblas.so.0 "$T/pack/lib/"
tar -C "$T" -czf "$ARCH" pack
rm -rf "$T"
ls -la "$ARCH"
