# BudgetOps: the operator, webhook and CLI in one image (docs/image.md).
#   docker build -t budgetops:0.1.0 .
#   podman build --isolation chroot -t budgetops:0.1.0 .
# BASE is any image with CPython 3.11 as `python3` and its venv module: the official slim
# image by default; hack/image.sh passes a local Debian bookworm one. Both stages use the same
# BASE, so the venv's interpreter link (/usr/local/bin/python3 or /usr/bin/python3) holds.
ARG BASE=python:3.11-slim

FROM ${BASE} AS requirements
# What to install, read from pyproject.toml: the build stage copies only this file, so its
# dependency layer is reused whenever the dependencies (not the rest of pyproject) are unchanged.
WORKDIR /src
COPY pyproject.toml ./
RUN python3 -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb")); \
print(*p["build-system"]["requires"], *p["project"]["dependencies"], sep="\n")' > /requirements.txt

FROM ${BASE} AS build
# pip reads its configuration (index, CA bundle) from the optional build secrets `pipconf`
# and `pipca` (hack/image.sh passes the machine's); without them it uses its defaults.
# Secrets never reach a layer; no pip cache is written.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CONFIG_FILE=/run/secrets/pipconf \
    PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/budgetops
COPY --from=requirements /requirements.txt /tmp/requirements.txt
# Wheels only: nothing is compiled, and no compiler is needed.
RUN --mount=type=secret,id=pipconf --mount=type=secret,id=pipca \
    /opt/budgetops/bin/pip install --quiet --only-binary=:all: -r /tmp/requirements.txt
# The project's own wheel, built offline with the setuptools installed above, then installed
# alone; pip and setuptools leave the venv, which is all the final stage takes.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN /opt/budgetops/bin/pip wheel --quiet --no-deps --no-build-isolation --wheel-dir /tmp/wheels . \
    && /opt/budgetops/bin/pip install --quiet --no-deps --no-index /tmp/wheels/budgetops-*.whl \
    && /opt/budgetops/bin/pip uninstall --quiet --yes pip setuptools \
    && rm -rf /tmp/wheels \
    && /opt/budgetops/bin/budgetops --help > /dev/null

FROM ${BASE}
# The non-root user, written directly: not every base has useradd.
RUN echo 'budgetops:x:65532:65532:budgetops:/nonexistent:/usr/sbin/nologin' >> /etc/passwd \
    && echo 'budgetops:x:65532:' >> /etc/group
COPY --from=build /opt/budgetops /opt/budgetops
ENV PATH=/opt/budgetops/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532
ENTRYPOINT ["budgetops"]
CMD ["run"]
