# tritonserver 2.51 (the one the nvidia-pytriton wheel ships: python backend only) on Debian
# bookworm with Python 3.11, numpy 1.x and onnxruntime, which tuner's python-backend adapter
# imports. scripts/build_triton_image.sh builds it without a registry: BASE is a debootstrapped
# root filesystem brought in with `docker import`, and the build context is the unpacked wheel
# (.venv/opt/pytriton, from scripts/setup.sh).
ARG BASE
FROM ${BASE}
# The binaries find their libraries at $ORIGIN/../../../nvidia_pytriton.libs (bin/) and
# $ORIGIN/../../../../nvidia_pytriton.libs (backends/<name>/). With the server in
# /opt/tritonserver, where stock Triton images keep it (its default backend directory), that
# relative layout puts the libraries at /nvidia_pytriton.libs.
COPY pytriton/tritonserver /opt/tritonserver
COPY nvidia_pytriton.libs /nvidia_pytriton.libs
ENV PATH=/opt/tritonserver/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
LABEL org.opencontainers.image.title="tuner-tritonserver" \
      org.opencontainers.image.description="tritonserver 2.51 (python backend) with Python 3.11, numpy and onnxruntime"
CMD ["tritonserver", "--help"]
